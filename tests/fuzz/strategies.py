"""Hypothesis strategies for the parsers' input: any JSON/YAML value, values shaped like a policy
file, and URIs made of hostile parts."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from policies.policy_file.reader import AGENT_KEYS, GROUP_KEYS, SERVER_KEYS, TOOL_KEYS

# Examples per property: small in `make test`, large in `make fuzz` (FUZZ_PARSER_EXAMPLES).
PARSER_EXAMPLES = int(os.environ.get("FUZZ_PARSER_EXAMPLES", "40"))

# Every example of a property shares the test's database transaction; each checks its own effect.
property_settings = settings(
    max_examples=PARSER_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

KEYS = sorted({*SERVER_KEYS, *TOOL_KEYS, *GROUP_KEYS, *AGENT_KEYS, "servers", "agents", "groups", "settings"})
names = st.sampled_from(["calendar", "mail", "list_events", "read", "write", "staff", "alice", ""]) | st.text(
    max_size=12
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | names
)
any_value = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | names, inner, max_size=5)
    ),
    max_leaves=25,
)

resources = st.sampled_from(
    ["https://calendar.example.com/mcp", "https://new.example.com/mcp", "http://127.0.0.1:9/mcp", "ftp://x"]
) | st.text(max_size=30)
tool = st.fixed_dictionaries(
    {"name": names, "actions": st.lists(names, max_size=3)},
    optional={
        "risk": st.sampled_from(["low", "medium", "high", "extreme"]) | any_value,
        "description": any_value,
    },
)
server = st.fixed_dictionaries(
    {"name": names, "resource": resources},
    optional={"tools": st.lists(tool, max_size=3), "active": any_value, "default_scopes": any_value},
)
scope_map = st.dictionaries(
    names, st.lists(st.sampled_from(["list_events:read", "send:write"]) | names, max_size=3)
)
group = st.fixed_dictionaries(
    {"name": names, "members": st.lists(names, max_size=3), "may_delegate": scope_map},
    optional={
        "approval_risk": any_value,
        "max_delegation_lifetime": st.integers(min_value=-10, max_value=2**40) | any_value,
        "approval_required": scope_map,
    },
)
agent = st.fixed_dictionaries(
    {
        "client_id": names,
        "client_type": st.sampled_from(["public", "confidential", "secret"]),
        "redirect_uris": st.lists(st.sampled_from(["http://127.0.0.1:1/cb", "javascript:alert(1)"]) | names),
        "status": st.sampled_from(["active", "pending", "suspended", "gone"]),
    },
    optional={"scope_ceiling": scope_map, "access_token_lifetime": any_value, "owner": names},
)
policy_shaped = st.fixed_dictionaries(
    {},
    optional={
        "servers": st.lists(server, max_size=3),
        "agents": st.lists(agent, max_size=2),
        "groups": st.lists(group, max_size=2),
        "settings": st.dictionaries(st.sampled_from(["agent_registration", "other"]), any_value, max_size=2),
    },
)

hosts = st.sampled_from(
    [
        "example.com",
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1.evil.com",
        "localhost.evil.com",
        "evil.com\\@127.0.0.1",
        "xn--exmple-cua.com",
        "exämple.com",
        "0x7f.0.0.1",
        "2130706433",
        "",
        "%00",
    ]
) | st.text(max_size=10)
redirect_uris = (
    st.builds(
        lambda scheme, userinfo, host, port, path, query, fragment: (
            f"{scheme}://{userinfo}{host}{port}{path}{query}{fragment}"
        ),
        st.sampled_from(
            ["https", "http", "HTTPS", "javascript", "data", "file", "ftp", "com.example.app", "vbscript"]
        ),
        st.sampled_from(["", "user@", "user:pass@", "127.0.0.1@"]),
        hosts,
        st.sampled_from(["", ":443", ":0", ":99999", ":-1", ":abc"]),
        st.sampled_from(["/cb", "", "/%2e%2e/", "/\u202ecb"]) | st.text(max_size=8).map(lambda t: "/" + t),
        st.sampled_from(["", "?a=1", "?next=javascript:alert(1)"]),
        st.sampled_from(["", "#", "#frag"]),
    )
    | st.sampled_from(["javascript:alert(1)", "data:text/html,<script>x</script>", "//evil.com/cb"])
    | st.text(max_size=40)
)
