"""Bad input to the management API: a 400 or 404 naming what is wrong, never a 500, and nothing changed."""

from dataclasses import dataclass, field

import pytest
from django.apps import apps

from console.roles import Role
from policies.models import Agent
from tests.api_support import api_as, audit_count, person

CALENDAR = "https://calendar.example.com/mcp"


@dataclass
class Bad:
    method: str
    path: str  # "{agent}" / "{policy}" are filled with real ids
    body: object
    status: int = 400
    fields: list[str] = field(default_factory=list)  # keys the error body must name
    says: str = ""  # text the error message must contain


CASES = {
    "duplicate resource URI": Bad(
        "post",
        "/api/servers/",
        {"name": "calendar2", "resource": CALENDAR},
        fields=["resource"],
        says="exists",
    ),
    "duplicate server name": Bad(
        "post",
        "/api/servers/",
        {"name": "calendar", "resource": "https://c2.example.com/mcp"},
        fields=["name"],
    ),
    "resource URI that is not a URI": Bad(
        "post", "/api/servers/", {"name": "x", "resource": "not a uri"}, fields=["resource"]
    ),
    "resource URI with a fragment": Bad(
        "post", "/api/servers/", {"name": "x", "resource": "https://x.example.com/mcp#a"}, fields=["resource"]
    ),
    "plain http resource URI off loopback": Bad(
        "post", "/api/servers/", {"name": "x", "resource": "http://x.example.com/mcp"}, fields=["resource"]
    ),
    "default scopes the server does not have": Bad(
        "patch",
        "/api/servers/calendar/",
        {"default_scopes": "list_events:read list_events:delete"},
        fields=["default_scopes"],
        says="list_events:delete",
    ),
    "server name of the wrong type": Bad(
        "post", "/api/servers/", {"name": ["x"], "resource": "https://x.example.com/mcp"}, fields=["name"]
    ),
    "tool on an unknown server": Bad(
        "post", "/api/tools/", {"server": "nowhere", "name": "t", "actions": ["read"]}, fields=["server"]
    ),
    "duplicate tool on a server": Bad(
        "post",
        "/api/tools/",
        {"server": "calendar", "name": "list_events", "actions": ["read"]},
        says="unique",
    ),
    "unknown scope in an agent ceiling": Bad(
        "patch",
        "/api/agents/{agent}/",
        {"has_scope_ceiling": True, "scope_ceiling": {"calendar": ["list_events:delete"]}},
        fields=["scope_ceiling"],
        says="Unknown scope 'list_events:delete'",
    ),
    "unknown server in an agent ceiling": Bad(
        "patch", "/api/agents/{agent}/", {"scope_ceiling": {"nowhere": ["a:b"]}}, fields=["scope_ceiling"]
    ),
    "malformed scope in an agent ceiling": Bad(
        "patch", "/api/agents/{agent}/", {"scope_ceiling": {"calendar": ["read"]}}, says="<tool>:<action>"
    ),
    "ceiling of the wrong type": Bad(
        "patch", "/api/agents/{agent}/", {"scope_ceiling": ["list_events:read"]}, fields=["scope_ceiling"]
    ),
    "negative token lifetime": Bad(
        "patch", "/api/agents/{agent}/", {"access_token_lifetime": -5}, fields=["access_token_lifetime"]
    ),
    "token lifetime that is not a number": Bad(
        "patch", "/api/agents/{agent}/", {"access_token_lifetime": "soon"}, fields=["access_token_lifetime"]
    ),
    "unknown owner": Bad("patch", "/api/agents/{agent}/", {"owner": "nobody"}, fields=["owner"]),
    "a grant type the console does not issue": Bad(
        "post",
        "/api/agents/",
        {"name": "a", "client_type": "confidential", "authorization_grant_type": "password"},
        fields=["authorization_grant_type"],
    ),
    "unknown scope in a policy": Bad(
        "patch",
        "/api/policies/{policy}/",
        {"may_delegate": {"calendar": ["list_events:read", "nope:read"]}},
        fields=["may_delegate"],
        says="nope:read",
    ),
    "policy scopes above an agent's ceiling": Bad(
        "patch",
        "/api/policies/{policy}/",
        {"agents": ["{ceiling_agent}"], "may_delegate": {"calendar": ["create_event:write"]}},
        fields=["may_delegate"],
        says="ceiling",
    ),
    "approval for a scope the policy does not list": Bad(
        "patch",
        "/api/policies/{policy}/",
        {"may_delegate": {"calendar": ["list_events:read"]}, "approval_required": {"mail": ["send:write"]}},
        fields=["approval_required"],
    ),
    "unknown approval risk": Bad(
        "patch", "/api/policies/{policy}/", {"approval_risk": "extreme"}, fields=["approval_risk"]
    ),
    "unknown agent in a policy": Bad(
        "patch", "/api/policies/{policy}/", {"agents": ["no-such-client"]}, fields=["agents"]
    ),
    "unknown group in a policy": Bad(
        "post", "/api/policies/", {"group": "ghosts", "may_delegate": {}}, fields=["group"]
    ),
    "unknown policy setting": Bad(
        "post", "/api/policy-settings/", {"key": "colour", "value": "blue"}, fields=["key"]
    ),
    "policy setting value it cannot take": Bad(
        "post", "/api/policy-settings/", {"key": "agent_registration", "value": "maybe"}, fields=["value"]
    ),
    "unknown member of a group": Bad(
        "post", "/api/groups/", {"name": "g", "members": ["ghost"]}, fields=["members"]
    ),
    "body that is not JSON": Bad("post", "/api/servers/", "{not json", says="JSON parse error"),
    "unknown server": Bad("get", "/api/servers/nowhere/", None, status=404),
    "unknown agent id": Bad("post", "/api/agents/999999/suspend/", None, status=404),
    "agent id that is not a number": Bad("get", "/api/agents/abc/", None, status=404),
    "unknown delegation": Bad("post", "/api/delegations/999999/approve/", {}, status=404),
    "unknown token": Bad("post", "/api/access-tokens/999999/revoke/", None, status=404),
    "unknown human": Bad("post", "/api/humans/nobody/revoke-all/", None, status=404),
}


def table_counts() -> dict[str, int]:
    """Rows in every table of the policies, audit and auth apps."""
    models = [m for label in ("policies", "audit", "auth") for m in apps.get_app_config(label).get_models()]
    counts = {m._meta.label: m.objects.count() for m in models}
    counts["m2m"] = sum(f.remote_field.through.objects.count() for m in models for f in m._meta.many_to_many)
    return counts


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(case, calendar, mail, alice, agent):
    from policies.models import DelegationPolicy, ToolAction

    ceiling_agent = Agent.objects.create(
        name="Capped",
        client_type="public",
        authorization_grant_type="authorization-code",
        redirect_uris="http://127.0.0.1:5000/cb",
        has_scope_ceiling=True,
    )
    ceiling_agent.scope_ceiling.set([ToolAction.objects.get(tool__name="list_events")])
    policy = DelegationPolicy.objects.get(group__name="staff")
    api = api_as(person("sec", Role.SECURITY_ADMIN))
    ids = {"agent": agent.pk, "policy": policy.pk, "ceiling_agent": ceiling_agent.client_id}
    body = case.body
    if isinstance(body, dict) and "agents" in body:
        body = {**body, "agents": [a.format(**ids) for a in body["agents"]]}
    before, events = table_counts(), audit_count()

    if isinstance(body, str):
        response = api.generic(case.method.upper(), case.path, body, content_type="application/json")
    else:
        response = getattr(api, case.method)(case.path.format(**ids), body, format="json")

    assert response.status_code == case.status, response.content
    error = response.json()
    for name in case.fields:
        assert name in error, error
    assert case.says in str(error)
    assert table_counts() == before
    assert audit_count() == events
