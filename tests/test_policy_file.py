"""Policy as code: apply_policy makes the console match a YAML or JSON file, export_policy writes the
console back out in the same shape, and load_demo sets up the demo of `make run`."""

from __future__ import annotations

import json
import re
import stat
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from console.roles import Role, has_role
from policies.decisions import decide, delegable_scopes
from policies.discovery import CONSOLE_CLIENT_ID, console_agent
from policies.models import Agent, DelegationPolicy, McpServer, PolicySetting, Tool, ToolAction
from policies.policy_file import export

# Canonical form (sorted, defaults left out), so it is also exactly what export_policy writes.
POLICY = """\
servers:
  - name: calendar
    resource: https://calendar.example.com/mcp
    description: Team calendar
    default_scopes: ["list_events:read"]
    tools:
      - {name: create_event, actions: [write], risk: high, description: Add events}
      - {name: list_events, actions: [read], risk: low, description: See events}
agents: []
groups:
  - name: staff
    members: [carol]
    may_delegate: {calendar: ["create_event:write", "list_events:read"]}
settings:
  agent_registration: require_approval
"""


@pytest.fixture
def carol(db) -> User:
    return User.objects.create_user("carol")


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def apply_policy(path: Path, *options: str) -> str:
    out = StringIO()
    call_command("apply_policy", str(path), *options, stdout=out)
    return out.getvalue()


def apply_json(path: Path, *options: str) -> dict:
    return json.loads(apply_policy(path, "--json", *options))


def export_policy(*options: str) -> str:
    out = StringIO()
    call_command("export_policy", *options, stdout=out)
    return out.getvalue()


def console_state() -> dict:
    """Everything a policy file can change, credentials included."""
    return {
        "policy": export(),
        "credentials": sorted(McpServer.objects.values_list("name", "client_id", "secret_hash")),
        "agents": sorted(
            Agent.objects.values_list("client_id", "client_secret", "registration_source", "updated")
        ),
        "counts": [
            model.objects.count()
            for model in (
                McpServer,
                Agent,
                Agent.scope_ceiling.through,
                Tool,
                ToolAction,
                Group,
                DelegationPolicy,
                DelegationPolicy.may_delegate.through,
                User.groups.through,
                PolicySetting,
            )
        ],
    }


def policy_applied_events() -> int:
    return AuditEvent.objects.filter(event_type="policy.applied").count()


# --- Applying ---------------------------------------------------------------------------------


def test_apply_creates_servers_tools_groups_and_settings(tmp_path, carol):
    summary = apply_json(write(tmp_path, POLICY))

    server = McpServer.objects.get(name="calendar")
    assert server.resource == "https://calendar.example.com/mcp"
    assert server.description == "Team calendar"
    assert server.default_scopes == "list_events:read"
    assert server.active
    tools = {tool.name: (tool.risk, tool.description) for tool in server.tools.all()}
    assert tools == {"create_event": ("high", "Add events"), "list_events": ("low", "See events")}
    assert delegable_scopes(carol, server) == {"list_events:read", "create_event:write"}
    assert PolicySetting.agent_registration() == "require_approval"
    assert summary["changed"] is True
    assert summary["changes"]["servers"]["created"] == ["calendar"]
    assert summary["changes"]["actions"]["created"] == [
        "calendar/create_event:write",
        "calendar/list_events:read",
    ]
    assert summary["changes"]["memberships"]["created"] == ["staff: carol"]
    assert summary["changes"]["settings"]["created"] == ["agent_registration=require_approval"]


def test_apply_shows_the_credentials_of_a_created_server_once(tmp_path, carol):
    path = write(tmp_path, POLICY)

    credentials = apply_json(path)["servers"]["calendar"]
    server = McpServer.objects.get(name="calendar")
    assert credentials["client_id"] == server.client_id
    assert server.check_secret(credentials["client_secret"])

    again = apply_json(path)
    assert again["servers"] == {}
    assert "client_secret" not in apply_policy(path)


def test_apply_in_text_shows_each_change_and_the_new_credentials(tmp_path, carol):
    output = apply_policy(write(tmp_path, POLICY))

    assert "+ server calendar" in output
    assert "+ delegable scope staff: calendar/list_events:read" in output
    assert "+ setting agent_registration=require_approval" in output
    assert f"client_id:     {McpServer.objects.get().client_id}" in output
    assert "client_secret: " in output


def test_applying_the_same_file_again_changes_nothing(tmp_path, carol):
    path = write(tmp_path, POLICY)
    apply_policy(path)
    before = console_state()

    summary = apply_json(path)

    assert summary["changed"] is False
    assert all(items == [] for verbs in summary["changes"].values() for items in verbs.values())
    assert console_state() == before
    assert apply_policy(path).startswith("No changes")


def test_each_apply_is_recorded_as_one_audit_event_with_its_changes(tmp_path, carol):
    path = write(tmp_path, POLICY)
    apply_policy(path)
    apply_policy(path)

    first, second = AuditEvent.objects.filter(event_type="policy.applied").order_by("id")
    assert first.outcome == "allow"
    assert first.detail["source"] == str(path)
    assert first.detail["changes"]["servers"]["created"] == ["calendar"]
    assert second.detail["changes"]["servers"]["created"] == []
    assert "client_secret" not in json.dumps(first.detail)


def test_dry_run_shows_what_would_change_and_changes_nothing(tmp_path, carol):
    path = write(tmp_path, POLICY)
    before = console_state()

    output = apply_policy(path, "--dry-run")
    summary = apply_json(path, "--dry-run")

    assert "Dry run" in output
    assert "+ server calendar" in output
    assert "client_secret" not in output
    assert summary["dry_run"] is True
    assert summary["changes"]["servers"]["created"] == ["calendar"]
    assert summary["servers"] == {}
    assert console_state() == before
    assert policy_applied_events() == 0


def test_dry_run_of_an_applied_file_reports_no_changes(tmp_path, carol):
    path = write(tmp_path, POLICY)
    apply_policy(path)

    assert apply_json(path, "--dry-run")["changed"] is False


SYNC = """\
servers:
  - name: calendar
    resource: https://calendar.example.com/mcp
    tools:
      - {name: list_events, actions: [read, search], risk: medium}
groups:
  - name: staff
    members: [carol]
    may_delegate: {calendar: ["list_events:search"]}
"""


def test_apply_syncs_the_tools_of_listed_servers_and_the_members_and_scopes_of_listed_groups(
    tmp_path, alice, carol, calendar, mail
):
    mail_and_mailers = [
        entry for entry in export()["servers"] + export()["groups"] if entry["name"] in {"mail", "mailers"}
    ]

    changes = apply_json(write(tmp_path, SYNC))["changes"]

    assert changes["servers"] == {"created": [], "updated": [], "removed": []}
    assert changes["tools"] == {
        "created": [],
        "updated": ["calendar/list_events (risk, description)"],
        "removed": ["calendar/create_event"],
    }
    assert changes["actions"] == {
        "created": ["calendar/list_events:search"],
        "updated": [],
        "removed": ["calendar/create_event:write"],
    }
    assert changes["memberships"] == {"created": ["staff: carol"], "updated": [], "removed": ["staff: alice"]}
    assert changes["delegable_scopes"] == {
        "created": ["staff: calendar/list_events:search"],
        "updated": [],
        "removed": ["staff: calendar/create_event:write", "staff: calendar/list_events:read"],
    }
    assert delegable_scopes(carol, calendar.server) == {"list_events:search"}
    assert delegable_scopes(alice, calendar.server) == set()
    # The server keeps its credentials; what the file does not list is left alone.
    server = McpServer.objects.get(name="calendar")
    assert server.check_secret(calendar.client_secret)
    assert [
        entry for entry in export()["servers"] + export()["groups"] if entry["name"] in {"mail", "mailers"}
    ] == (mail_and_mailers)
    assert delegable_scopes(alice, mail.server) == {"send:write"}


def test_removing_an_action_reports_the_delegable_scopes_of_unlisted_groups_it_takes_along(
    tmp_path, alice, calendar
):
    only_reading = """\
servers:
  - name: calendar
    resource: https://calendar.example.com/mcp
    tools:
      - {name: list_events, actions: [read], risk: low, description: list_events tool}
      - {name: create_event, actions: [], risk: high, description: create_event tool}
"""
    changes = apply_json(write(tmp_path, only_reading))["changes"]

    assert changes["actions"]["removed"] == ["calendar/create_event:write"]
    assert changes["delegable_scopes"]["removed"] == ["staff: calendar/create_event:write"]
    assert delegable_scopes(alice, calendar.server) == {"list_events:read"}


def test_apply_updates_server_fields_and_settings(tmp_path, calendar):
    PolicySetting.objects.create(key="agent_registration", value="auto_approve")
    changed = """\
servers:
  - name: calendar
    resource: https://calendar.example.com/mcp/v2
    active: false
    tools:
      - {name: list_events, actions: [read], risk: low, description: list_events tool}
      - {name: create_event, actions: [write], risk: high, description: create_event tool}
settings: {agent_registration: require_approval}
"""
    changes = apply_json(write(tmp_path, changed))["changes"]

    assert changes["servers"]["updated"] == ["calendar (resource, active)"]
    assert changes["settings"]["updated"] == ["agent_registration=require_approval"]
    server = McpServer.objects.get(name="calendar")
    assert (server.resource, server.active) == ("https://calendar.example.com/mcp/v2", False)
    assert PolicySetting.agent_registration() == "require_approval"


# --- Exporting --------------------------------------------------------------------------------


def test_export_leaves_out_the_consoles_own_discovery_agent(tmp_path, carol):
    apply_policy(write(tmp_path, POLICY))
    console_agent()

    exported = yaml.safe_load(export_policy())

    assert CONSOLE_CLIENT_ID not in [agent["client_id"] for agent in exported["agents"]]


def test_export_writes_what_was_applied(tmp_path, carol):
    apply_policy(write(tmp_path, POLICY))

    assert yaml.safe_load(export_policy()) == yaml.safe_load(POLICY)
    assert json.loads(export_policy("--format", "json")) == yaml.safe_load(POLICY)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_then_apply_changes_nothing(tmp_path, fmt, alice, calendar, mail):
    McpServer.objects.filter(name="mail").update(
        description="Mail", default_scopes="send:write", active=False
    )
    PolicySetting.objects.create(key="agent_registration", value="require_approval")
    Group.objects.create(name="auditors")
    path = tmp_path / f"exported.{fmt}"
    before = console_state()

    export_policy("--format", fmt, "--output", str(path))
    summary = apply_json(path)

    assert summary["changed"] is False, summary["changes"]
    assert console_state() == before
    exported = yaml.safe_load(path.read_text())
    assert [server["name"] for server in exported["servers"]] == ["calendar", "mail"]
    assert [group["name"] for group in exported["groups"]] == ["auditors", "mailers", "staff"]


RULES = """\
servers:
  - name: calendar
    resource: https://calendar.example.com/mcp
    tools:
      - {name: create_event, actions: [write], risk: high}
      - {name: list_events, actions: [read], risk: low}
groups:
  - name: staff
    members: [carol]
    may_delegate: {calendar: ["list_events:read"]}
    approval_risk: high
    max_delegation_lifetime: 86400
    agent_policies:
      - name: trusted writer
        agents: [research-agent]
        may_delegate: {calendar: ["create_event:write", "list_events:read"]}
        approval_required: {calendar: ["create_event:write"]}
        max_delegation_lifetime: 3600
"""


def test_agent_policies_approval_rules_and_lifetimes_apply_and_export_round_trip(tmp_path, carol):
    trusted = Agent.objects.create(client_id="research-agent", name="Research", client_type="public")
    other = Agent.objects.create(client_id="other-agent", name="Other", client_type="public")
    summary = apply_json(write(tmp_path, RULES))

    assert summary["changes"]["policies"]["created"] == ["staff (trusted writer)"]
    server = McpServer.objects.get(name="calendar")
    both = ["list_events:read", "create_event:write"]
    for_trusted = decide(agent=trusted, server=server, human=carol, scopes=both)
    assert for_trusted.scopes == set(both)
    assert (for_trusted.needs_approval, for_trusted.lifetime) == ({"create_event:write"}, 3600)
    for_other = decide(agent=other, server=server, human=carol, scopes=both)
    assert (for_other.scopes, for_other.lifetime) == ({"list_events:read"}, 86400)

    agents = [
        {
            "client_id": client_id,
            "name": name,
            "client_type": "public",
            "redirect_uris": [],
            "status": "active",
        }
        for client_id, name in [("other-agent", "Other"), ("research-agent", "Research")]
    ]
    assert yaml.safe_load(export_policy()) == {**yaml.safe_load(RULES), "agents": agents, "settings": {}}
    assert apply_json(write(tmp_path, export_policy(), "again.yaml"))["changed"] is False


def test_a_group_policy_the_file_no_longer_lists_is_removed(tmp_path, carol):
    Agent.objects.create(client_id="research-agent", name="Research", client_type="public")
    apply_policy(write(tmp_path, RULES))

    summary = apply_json(write(tmp_path, RULES.split("    agent_policies:")[0], "fewer.yaml"))

    assert summary["changes"]["policies"]["removed"] == ["staff (trusted writer)"]
    assert summary["changes"]["delegable_scopes"]["removed"] == [
        "staff (trusted writer): calendar/create_event:write",
        "staff (trusted writer): calendar/list_events:read",
    ]
    assert list(DelegationPolicy.objects.values_list("name", flat=True)) == [""]


def test_export_to_an_unwritable_place_is_a_clear_error(tmp_path, calendar):
    with pytest.raises(CommandError, match="cannot write"):
        export_policy("--output", str(tmp_path / "missing-dir" / "policy.yaml"))


# --- Agents -----------------------------------------------------------------------------------

AGENTS = """\
agents:
  - client_id: research-agent
    name: Research agent
    client_type: public
    redirect_uris: ["http://127.0.0.1:53682/callback"]
    status: active
    team: research
    owner: carol
    has_scope_ceiling: true
    scope_ceiling: {calendar: ["list_events:read"]}
    access_token_lifetime: 600
    refresh_token_lifetime: 86400
  - client_id: billing-bot
    name: Billing bot
    client_type: confidential
    redirect_uris: ["https://billing.example.com/callback"]
    status: suspended
"""


def test_apply_registers_the_agents_of_a_file_by_hand_with_every_field(tmp_path, alice, carol, calendar):
    summary = apply_json(write(tmp_path, AGENTS))

    assert summary["changes"]["agents"]["created"] == ["research-agent", "billing-bot"]
    research = Agent.objects.get(client_id="research-agent")
    assert (research.name, research.client_type, research.redirect_uris, research.status) == (
        "Research agent",
        "public",
        "http://127.0.0.1:53682/callback",
        "active",
    )
    assert (research.team, research.user, research.registration_source) == ("research", carol, "manual")
    assert research.has_scope_ceiling
    assert [action.scope for action in research.scope_ceiling.all()] == ["list_events:read"]
    assert (research.access_token_lifetime, research.refresh_token_lifetime) == (600, 86400)
    assert research.authorization_grant_type == Agent.GRANT_AUTHORIZATION_CODE
    # The ceiling is in force: the policy lets alice delegate more, the agent never gets it.
    both = ["list_events:read", "create_event:write"]
    assert decide(agent=research, server=calendar.server, human=alice, scopes=both).scopes == {
        "list_events:read"
    }
    billing = Agent.objects.get(client_id="billing-bot")
    assert (billing.status, billing.registration_source, billing.user) == ("suspended", "manual", None)
    registered = AuditEvent.objects.filter(event_type="agent.registered").order_by("id")
    assert [event.agent_client_id for event in registered] == ["research-agent", "billing-bot"]


def test_a_confidential_agent_created_by_a_file_gets_a_hashed_secret_shown_once(tmp_path, carol, calendar):
    path = write(tmp_path, AGENTS)

    summary = apply_json(path)

    assert list(summary["agents"]) == ["billing-bot"]  # the public agent has no secret to show
    secret = summary["agents"]["billing-bot"]["client_secret"]
    stored = Agent.objects.get(client_id="billing-bot").client_secret
    assert secret not in stored and check_password(secret, stored)
    assert secret not in json.dumps(AuditEvent.objects.get(event_type="policy.applied").detail)
    assert apply_json(path)["agents"] == {}
    assert "client_secret" not in apply_policy(path)
    assert secret not in export_policy()


def test_apply_in_text_shows_the_secret_of_a_new_confidential_agent(tmp_path, carol, calendar):
    output = apply_policy(write(tmp_path, AGENTS))

    assert "+ agent research-agent" in output
    assert "Client secret of the confidential agent 'billing-bot' (shown once; store it now):" in output
    secret = re.search(r"client_secret: (\S+)", output)[1]
    assert check_password(secret, Agent.objects.get(client_id="billing-bot").client_secret)


def test_an_agent_that_turns_confidential_gets_a_new_secret(tmp_path, carol, calendar):
    apply_policy(write(tmp_path, AGENTS))
    old = Agent.objects.get(client_id="research-agent").client_secret

    summary = apply_json(
        write(tmp_path, AGENTS.replace("client_type: public", "client_type: confidential", 1))
    )

    assert summary["changes"]["agents"]["updated"] == ["research-agent (client_type, client_secret)"]
    secret = summary["agents"]["research-agent"]["client_secret"]
    stored = Agent.objects.get(client_id="research-agent").client_secret
    assert stored != old and check_password(secret, stored)


def test_applying_an_agent_file_again_changes_nothing(tmp_path, carol, calendar):
    path = write(tmp_path, AGENTS)
    apply_policy(path)
    before = console_state()

    summary = apply_json(path)

    assert summary["changed"] is False, summary["changes"]
    assert console_state() == before


def test_exported_agents_apply_back_without_changes(tmp_path, carol, alice, agent, calendar, mail):
    apply_policy(write(tmp_path, AGENTS))
    Agent.objects.create(
        client_id="dcr-client",
        client_type="public",
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:9000/cb",
        registration_source=Agent.RegistrationSource.DCR,
        has_scope_ceiling=True,  # on, with an empty ceiling: nothing at all
    )
    path = tmp_path / "exported.yaml"
    before = console_state()

    export_policy("--output", str(path))
    summary = apply_json(path)

    assert summary["changed"] is False, summary["changes"]
    assert console_state() == before
    exported = {entry["client_id"]: entry for entry in yaml.safe_load(path.read_text())["agents"]}
    assert exported["dcr-client"]["has_scope_ceiling"] is True
    assert "scope_ceiling" not in exported["dcr-client"]
    assert exported["research-agent"]["scope_ceiling"] == {"calendar": ["list_events:read"]}
    assert Agent.objects.get(client_id="dcr-client").registration_source == "dcr"


def test_agent_changes_in_a_file_go_through_the_audited_status_changes(tmp_path, carol, calendar):
    apply_policy(write(tmp_path, AGENTS))
    Agent.objects.filter(client_id="research-agent").update(status="pending")
    changed = AGENTS.replace("status: suspended", "status: active").replace("team: research", "team: finance")

    summary = apply_json(write(tmp_path, changed))

    assert summary["changes"]["agents"]["updated"] == [
        "research-agent (team, status)",
        "billing-bot (status)",
    ]
    assert set(Agent.objects.values_list("client_id", "status", "team")) == {
        ("research-agent", "active", "finance"),
        ("billing-bot", "active", ""),
    }
    events = AuditEvent.objects.filter(event_type__in=["agent.approved", "agent.reactivated"]).order_by("id")
    assert [(event.event_type, event.agent_client_id) for event in events] == [
        ("agent.approved", "research-agent"),
        ("agent.reactivated", "billing-bot"),
    ]


def test_dry_run_of_agents_reports_them_without_secrets_and_changes_nothing(tmp_path, carol, calendar):
    before = console_state()

    summary = apply_json(write(tmp_path, AGENTS), "--dry-run")
    output = apply_policy(write(tmp_path, AGENTS), "--dry-run")

    assert summary["changes"]["agents"]["created"] == ["research-agent", "billing-bot"]
    assert summary["agents"] == {}
    assert "+ agent billing-bot" in output and "client_secret" not in output
    assert console_state() == before
    assert not AuditEvent.objects.filter(event_type__startswith="agent.").exists()


def test_a_group_policy_may_name_an_agent_the_same_file_creates(tmp_path, carol, calendar):
    text = AGENTS + (
        "groups:\n  - name: staff\n    members: [carol]\n    may_delegate: {}\n    agent_policies:\n"
        "      - {name: research, agents: [research-agent], may_delegate: {calendar: ['list_events:read']}}\n"
    )
    apply_policy(write(tmp_path, text))

    research = Agent.objects.get(client_id="research-agent")
    assert decide(agent=research, server=calendar.server, human=carol, scopes=["list_events:read"]).allowed


def test_an_agent_status_change_that_is_not_allowed_is_refused_and_changes_nothing(tmp_path, carol, calendar):
    apply_policy(write(tmp_path, AGENTS))
    before = console_state()

    with pytest.raises(CommandError) as refused:
        apply_policy(write(tmp_path, AGENTS.replace("status: active", "status: pending", 1), "again.yaml"))

    assert "line 6: agents[0].status: an agent that is active cannot become pending" in str(refused.value)
    assert console_state() == before


def agent_file(**fields: str) -> str:
    """One agent; each keyword replaces (or, as None, removes) one of its lines."""
    lines = {
        "client_id": "client_id: bot",
        "client_type": "client_type: public",
        "redirect_uris": "redirect_uris: ['http://127.0.0.1:9/cb']",
        "status": "status: active",
        **fields,
    }
    body = "\n".join(f"    {line}" for line in lines.values() if line)
    return "agents:\n  -\n" + body + "\n"


BAD_AGENTS = {
    "agent without a client type": (
        agent_file(client_type=None),
        "line 3: agents[0]: missing key 'client_type'",
    ),
    "unknown client type": (
        agent_file(client_type="client_type: secret"),
        "line 4: agents[0].client_type: must be one of public, confidential",
    ),
    "unknown status": (
        agent_file(status="status: paused"),
        "line 6: agents[0].status: must be one of pending, active, suspended",
    ),
    "unknown agent key": (
        agent_file(colour="colour: red"),
        "line 7: agents[0].colour: unknown key (expected one of client_id, name,",
    ),
    "redirect URIs not a list": (
        agent_file(redirect_uris="redirect_uris: http://127.0.0.1:9/cb"),
        "line 5: agents[0].redirect_uris: must be a list",
    ),
    "plain http redirect off loopback": (
        agent_file(redirect_uris="redirect_uris: ['http://bot.example.com/cb']"),
        "line 5: agents[0].redirect_uris: http://bot.example.com/cb: http is allowed for loopback hosts",
    ),
    "no redirect URI": (
        agent_file(redirect_uris="redirect_uris: []"),
        "line 5: agents[0].redirect_uris: redirect_uris cannot be empty",
    ),
    "unknown owner": (
        agent_file(owner="owner: mallory"),
        "line 7: agents[0].owner: there is no user 'mallory'",
    ),
    "ceiling scope not on a server of the console": (
        agent_file(ceiling="scope_ceiling: {calendar: ['list_events:delete']}"),
        "line 7: agents[0].scope_ceiling.calendar[0]: 'list_events:delete' is not a scope of server",
    ),
    "ceiling scope not on a server of the file": (
        "servers:\n  - {name: notes, resource: https://notes.example.com/mcp, tools: "
        "[{name: find, actions: [read], risk: low}]}\n"
        + agent_file(ceiling="scope_ceiling: {notes: ['find:write']}"),
        "line 9: agents[0].scope_ceiling.notes[0]: 'find:write' is not a scope of server 'notes'",
    ),
    "ceiling of an unknown server": (
        agent_file(ceiling="scope_ceiling: {wiki: ['page:read']}"),
        "line 7: agents[0].scope_ceiling.wiki: there is no server 'wiki' in the file or the console",
    ),
    "ceiling switch not a boolean": (
        agent_file(ceiling="has_scope_ceiling: sometimes"),
        "line 7: agents[0].has_scope_ceiling: must be true or false",
    ),
    "token lifetime not seconds": (
        agent_file(lifetime="access_token_lifetime: -5"),
        "line 7: agents[0].access_token_lifetime: must be a whole number of seconds",
    ),
    "team too long": (
        agent_file(team="team: " + "t" * 101),
        "line 7: agents[0].team: is too long (at most 100 characters)",
    ),
    "agent listed twice": (
        agent_file() + "  - {client_id: bot, client_type: public, redirect_uris: [], status: active}\n",
        "line 7: agents[1].client_id: agent 'bot' is already defined at agents[0]",
    ),
}


@pytest.mark.parametrize("text, message", BAD_AGENTS.values(), ids=BAD_AGENTS.keys())
def test_a_bad_agent_is_refused_with_its_line_and_key_and_changes_nothing(
    tmp_path, text, message, alice, agent
):
    before = console_state()

    with pytest.raises(CommandError) as refused:
        apply_policy(write(tmp_path, text))

    assert message in str(refused.value)
    assert console_state() == before
    assert policy_applied_events() == 0


# --- Bad files --------------------------------------------------------------------------------

NOTES = """\
servers:
  - {name: notes, resource: https://notes.example.com/mcp, tools: [{name: find, actions: [read], risk: low}]}
"""

BAD_FILES = {
    "console role as a policy group": (
        NOTES + "groups:\n  - name: Approvers\n    members: []\n    may_delegate: {}\n",
        "line 4: groups[0].name: 'Approvers' is a console role, not a policy group",
    ),
    "approval for a scope the policy does not grant": (
        NOTES
        + "groups:\n  - name: w\n    members: []\n    may_delegate: {}\n"
        + "    approval_required: {notes: ['find:read']}\n",
        "line 7: groups[0].approval_required.notes[0]: 'find:read' is not in this policy's may_delegate",
    ),
    "unknown agent": (
        NOTES
        + "groups:\n  - name: w\n    members: []\n    may_delegate: {}\n"
        + "    agent_policies:\n      - {name: bot, agents: [no-such-agent], may_delegate: {}}\n",
        "groups[0].agent_policies[0].agents[0]: there is no agent 'no-such-agent'",
    ),
    "lifetime not a number of seconds": (
        NOTES
        + "groups:\n  - name: w\n    members: []\n    may_delegate: {}\n    max_delegation_lifetime: 1h\n",
        "line 7: groups[0].max_delegation_lifetime: must be a whole number of seconds",
    ),
    "unknown approval risk": (
        NOTES + "groups:\n  - name: w\n    members: []\n    may_delegate: {}\n    approval_risk: extreme\n",
        "line 7: groups[0].approval_risk: must be one of low, medium, high",
    ),
    "unknown key": (
        "servers:\n"
        "  - name: notes\n"
        "    resource: https://notes.example.com/mcp\n"
        "    tools:\n"
        "      - {name: list_notes, actions: [read], risk: low, colour: red}\n",
        "line 5: servers[0].tools[0].colour: unknown key (expected one of name, actions, risk, description)",
    ),
    "risk out of range": (
        "servers:\n"
        "  - name: notes\n"
        "    resource: https://notes.example.com/mcp\n"
        "    tools:\n"
        "      - {name: list_notes, actions: [read], risk: severe}\n",
        "line 5: servers[0].tools[0].risk: must be one of low, medium, high",
    ),
    "tools not a list": (
        "servers:\n  - name: notes\n    resource: https://notes.example.com/mcp\n    tools: list_notes\n",
        "line 4: servers[0].tools: must be a list",
    ),
    "active not a boolean": (
        "servers:\n  - name: notes\n    resource: https://notes.example.com/mcp\n"
        "    active: maybe\n    tools: []\n",
        "line 4: servers[0].active: must be true or false",
    ),
    "missing key": (
        "servers:\n  - name: notes\n    tools: []\n",
        "line 2: servers[0]: missing key 'resource'",
    ),
    "key given twice": (
        "servers:\n  - name: notes\n    name: notes2\n"
        "    resource: https://notes.example.com/mcp\n    tools: []\n",
        "line 3: servers[0].name: key given twice",
    ),
    "tool name with a colon": (
        "servers:\n  - name: notes\n    resource: https://notes.example.com/mcp\n    tools:\n"
        '      - {name: "list:notes", actions: [read], risk: low}\n',
        "line 5: servers[0].tools[0].name: 'list:notes' may contain only letters, digits, _ . and -",
    ),
    "duplicate server name": (
        NOTES + "  - {name: notes, resource: https://notes2.example.com/mcp, tools: []}\n",
        "line 3: servers[1].name: server 'notes' is already defined at servers[0]",
    ),
    "duplicate resource": (
        NOTES + "  - {name: notes2, resource: https://notes.example.com/mcp, tools: []}\n",
        "line 3: servers[1].resource: 'https://notes.example.com/mcp' is already the resource of servers[0]",
    ),
    "resource of another server in the console": (
        NOTES + "  - {name: post, resource: https://mail.example.com/mcp, tools: []}\n",
        "line 3: servers[1].resource: 'https://mail.example.com/mcp' is the resource of server 'mail'",
    ),
    "relative resource": (
        "servers:\n  - {name: notes, resource: notes/mcp, tools: []}\n",
        "line 2: servers[0].resource: must be an absolute http or https URI",
    ),
    "plain http resource off loopback": (
        "servers:\n  - {name: notes, resource: 'http://notes.example.com/mcp', tools: []}\n",
        "line 2: servers[0].resource: must use https (plain http is allowed for loopback hosts only)",
    ),
    "resource with a fragment": (
        "servers:\n  - {name: notes, resource: 'https://notes.example.com/mcp#tools', tools: []}\n",
        "line 2: servers[0].resource: must not have a fragment (RFC 8707)",
    ),
    "default scope not on the server": (
        "servers:\n"
        "  - name: notes\n"
        "    resource: https://notes.example.com/mcp\n"
        "    default_scopes: [list_notes:write]\n"
        "    tools: [{name: list_notes, actions: [read], risk: low}]\n",
        "line 4: servers[0].default_scopes[0]: 'list_notes:write' is not a scope of server 'notes'",
    ),
    "scope not on a server of the file": (
        NOTES
        + "groups:\n  - name: writers\n    members: [carol]\n    may_delegate: {notes: ['find:write']}\n",
        "line 6: groups[0].may_delegate.notes[0]: 'find:write' is not a scope of server 'notes'",
    ),
    "scope not on a server of the console": (
        NOTES + "groups:\n  - name: writers\n    members: [carol]\n    may_delegate: {mail: ['send:read']}\n",
        "line 6: groups[0].may_delegate.mail[0]: 'send:read' is not a scope of server 'mail'",
    ),
    "scope without an action": (
        NOTES + "groups:\n  - name: writers\n    members: [carol]\n    may_delegate: {notes: [find]}\n",
        "line 6: groups[0].may_delegate.notes[0]: 'find' must be a scope of the form tool:action",
    ),
    "unknown server": (
        NOTES + "groups:\n  - name: writers\n    members: [carol]\n    may_delegate: {wiki: ['page:read']}\n",
        "line 6: groups[0].may_delegate.wiki: there is no server 'wiki' in the file or the console",
    ),
    "unknown member": (
        NOTES + "groups:\n  - name: writers\n    members: [carol, mallory]\n    may_delegate: {}\n",
        "line 5: groups[0].members[1]: there is no user 'mallory'",
    ),
    "member listed twice": (
        NOTES + "groups:\n  - name: writers\n    members: [carol, carol]\n    may_delegate: {}\n",
        "line 5: groups[0].members[1]: 'carol' is listed twice",
    ),
    "setting value out of range": (
        NOTES + "settings:\n  agent_registration: sometimes\n",
        "line 4: settings.agent_registration: must be one of auto_approve, require_approval",
    ),
    "unknown setting": (
        NOTES + "settings:\n  approvals: always\n",
        "line 4: settings.approvals: unknown key (expected one of agent_registration)",
    ),
    "unknown top-level key": (
        NOTES + "users: []\n",
        "line 3: users: unknown key (expected one of servers, agents, groups, exchange_policies, settings)",
    ),
    "not a mapping": ("- notes\n", "line 1: document: must be a mapping"),
    "empty file": ("# nothing yet\n", "the policy document is empty"),
    "YAML syntax": (
        "servers:\n  - name: notes\n   resource: https://notes.example.com/mcp\n",
        "line 3, column 4: invalid YAML",
    ),
}


@pytest.mark.parametrize("text, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_with_its_line_and_key_and_changes_nothing(
    tmp_path, text, message, alice, carol
):
    before = console_state()

    with pytest.raises(CommandError) as refused:
        apply_policy(write(tmp_path, text))

    assert message in str(refused.value)
    assert "nothing changed" in str(refused.value)
    assert console_state() == before
    assert policy_applied_events() == 0


def test_every_problem_of_a_bad_file_is_reported_at_once(tmp_path, carol):
    text = (
        "servers:\n"
        "  - name: notes\n"
        "    resource: ftp://notes.example.com/mcp\n"
        "    tools: [{name: list_notes, actions: [read], risk: extreme}]\n"
        "groups:\n"
        "  - {name: writers, members: [nobody], may_delegate: {}}\n"
    )
    with pytest.raises(CommandError) as refused:
        apply_policy(write(tmp_path, text))

    assert "line 3: servers[0].resource: must be an absolute http or https URI" in str(refused.value)
    assert "line 4: servers[0].tools[0].risk: must be one of low, medium, high" in str(refused.value)


def test_a_missing_file_is_a_clear_error(tmp_path, db):
    with pytest.raises(CommandError, match="cannot read the file: No such file or directory"):
        apply_policy(tmp_path / "nowhere.yaml")


# --- JSON -------------------------------------------------------------------------------------


def test_a_json_policy_applies_like_yaml(tmp_path, carol):
    text = json.dumps(yaml.safe_load(POLICY), indent="\t")  # tabs: valid JSON that YAML alone refuses

    apply_policy(write(tmp_path, text, "policy.json"))

    assert yaml.safe_load(export_policy()) == yaml.safe_load(POLICY)


def test_invalid_json_is_refused_with_its_line_and_column(tmp_path, carol):
    text = """{
  "servers": [
    {"name": "notes", "resource": "https://notes.example.com/mcp", "tools": []},
  ]
}
"""
    before = console_state()

    with pytest.raises(CommandError, match=r"line 4, column 3: invalid JSON: Expecting value"):
        apply_policy(write(tmp_path, text, "policy.json"))

    assert console_state() == before


def test_a_json_policy_with_a_wrong_value_names_its_line_and_key(tmp_path, carol):
    document = yaml.safe_load(POLICY)
    document["servers"][0]["tools"][1]["risk"] = "extreme"
    text = json.dumps(document, indent=2)
    line = next(number for number, line in enumerate(text.splitlines(), 1) if '"extreme"' in line)

    with pytest.raises(CommandError, match=rf"line {line}: servers\[0\]\.tools\[1\]\.risk: must be one of"):
        apply_policy(write(tmp_path, text, "policy.json"))


# --- The demo ---------------------------------------------------------------------------------


def load_demo() -> str:
    out = StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def env_values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_load_demo_creates_the_users_the_policy_and_the_demo_server_credentials(tmp_path, settings, db):
    settings.VAR_DIR = tmp_path

    output = load_demo()

    admin_password = re.search(r"Created user admin \(console admin\) with password: (\S+)", output)[1]
    alice_password = re.search(r"Created user alice \(demo human\) with password: (\S+)", output)[1]
    admin, alice = User.objects.get(username="admin"), User.objects.get(username="alice")
    assert admin.is_superuser and admin.is_staff and admin.check_password(admin_password)
    assert not alice.is_staff and alice.check_password(alice_password)
    assert admin_password != alice_password
    approver, auditor = User.objects.get(username="approver"), User.objects.get(username="auditor")
    assert has_role(approver, Role.APPROVER) and not has_role(approver, Role.COMPLIANCE_AUDITOR)
    assert has_role(auditor, Role.COMPLIANCE_AUDITOR) and not has_role(auditor, Role.APPROVER)
    assert approver.is_staff and auditor.is_staff and not (approver.is_superuser or auditor.is_superuser)

    calendar = McpServer.objects.get(name="calendar")
    assert calendar.resource == "http://127.0.0.1:8001/mcp"
    assert {tool.name: tool.risk for tool in calendar.tools.all()} == {
        "list_events": "low",
        "create_event": "high",
        "delete_event": "high",
    }
    assert delegable_scopes(alice, calendar) == {"list_events:read", "create_event:write"}

    env_file = tmp_path / "demo-calendar-server.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = env_values(env_file)
    assert values["CONSOLE_URL"] == settings.ISSUER
    assert values["MCP_SERVER_CLIENT_ID"] == calendar.client_id
    assert calendar.check_secret(values["MCP_SERVER_CLIENT_SECRET"])
    assert (
        f"CONSOLE_URL={settings.ISSUER} MCP_SERVER_CLIENT_ID={calendar.client_id} "
        f"MCP_SERVER_CLIENT_SECRET={values['MCP_SERVER_CLIENT_SECRET']} python examples/calendar_server.py"
    ) in output


def test_load_demo_again_leaves_users_passwords_and_server_credentials_alone(tmp_path, settings, db):
    settings.VAR_DIR = tmp_path
    first = load_demo()
    admin_password = re.search(r"Created user admin \(console admin\) with password: (\S+)", first)[1]
    env_file = tmp_path / "demo-calendar-server.env"
    env_text = env_file.read_text()
    before = console_state()

    output = load_demo()

    assert "User admin (console admin) already exists" in output
    assert "User alice (demo human) already exists" in output
    assert "password" not in output
    assert "client_secret" not in output
    assert "The demo policy is already in place" in output
    assert console_state() == before
    assert User.objects.get(username="admin").check_password(admin_password)
    assert env_file.read_text() == env_text
