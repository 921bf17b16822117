"""Management API: MCP servers (credentials shown once, rotation, revocation) and their tools."""

import pytest

from audit.models import AuditEvent
from console.roles import Role
from policies.models import Delegation, McpServer, Tool
from tests.api_support import api_as, audit_count, person, tokens_for
from tests.conftest import introspect


@pytest.fixture
def admin_api(db):
    return api_as(person("sec", Role.SECURITY_ADMIN))


def test_registering_a_server_returns_its_credentials_once_and_they_authenticate_introspection(admin_api):
    response = admin_api.post(
        "/api/servers/", {"name": "wiki", "resource": "https://wiki.example.com/mcp"}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    server = McpServer.objects.get(name="wiki")
    assert body["client_id"] == server.client_id
    assert server.check_secret(body["client_secret"])
    assert server.secret_hash != body["client_secret"]
    shown_again = admin_api.get("/api/servers/wiki/").json()
    assert "client_secret" not in shown_again and body["client_secret"] not in str(shown_again)
    assert AuditEvent.objects.filter(server_name="wiki", actor_username="sec").exists()


def test_rotating_credentials_stops_the_old_secret_at_once(admin_api, calendar, alice, agent):
    delegation = Delegation.objects.create(
        human=alice, agent=agent, server=calendar.server, scope="list_events:read", status="approved"
    )
    tokens_for(delegation, "rotate")

    response = admin_api.post("/api/servers/calendar/rotate-credentials/")

    assert response.status_code == 200, response.content
    new = response.json()
    assert introspect(calendar, "access-rotate").status_code == 401
    calendar.client_id, calendar.client_secret = new["client_id"], new["client_secret"]
    assert introspect(calendar, "access-rotate").json()["active"] is True


def test_revoking_a_server_revokes_its_delegations_only(admin_api, calendar, mail, alice, agent):
    on_calendar = Delegation.objects.create(
        human=alice, agent=agent, server=calendar.server, scope="list_events:read", status="approved"
    )
    on_mail = Delegation.objects.create(
        human=alice, agent=agent, server=mail.server, scope="send:write", status="approved"
    )
    tokens_for(on_calendar, "cal")
    tokens_for(on_mail, "mail")

    response = admin_api.post("/api/servers/calendar/revoke-all/")

    assert response.json() == {"revoked": 1}
    assert introspect(calendar, "access-cal").json()["active"] is False
    assert introspect(mail, "access-mail").json()["active"] is True
    on_mail.refresh_from_db()
    assert on_mail.status == "approved"


def test_deleting_a_server_records_the_revocation_of_what_hung_off_it(admin_api, calendar, alice, agent):
    delegation = Delegation.objects.create(
        human=alice, agent=agent, server=calendar.server, scope="list_events:read", status="approved"
    )

    assert admin_api.delete("/api/servers/calendar/").status_code == 204

    assert not McpServer.objects.filter(name="calendar").exists()
    assert AuditEvent.objects.filter(
        event_type="delegation.revoked", delegation_id=delegation.pk, actor_username="sec"
    ).exists()


def test_tools_are_listed_per_server_with_actions_risk_and_description(admin_api, calendar, mail):
    response = admin_api.get("/api/tools/", {"server": "calendar", "risk": "high"})

    assert response.status_code == 200
    (tool,) = response.json()["results"]
    assert tool["name"] == "create_event"
    assert tool["server"] == "calendar"
    assert tool["actions"] == ["write"]
    assert tool["description"] == "create_event tool"


def test_a_tool_is_created_and_its_actions_replaced(admin_api, calendar):
    created = admin_api.post(
        "/api/tools/",
        {"server": "calendar", "name": "delete_event", "risk": "high", "actions": ["write", "purge"]},
        format="json",
    )
    assert created.status_code == 201, created.content

    changed = admin_api.patch(
        f"/api/tools/{created.json()['id']}/",
        {"actions": ["write"], "description": "Deletes an event."},
        format="json",
    )

    assert changed.status_code == 200, changed.content
    tool = Tool.objects.get(server=calendar.server, name="delete_event")
    assert [a.name for a in tool.actions.all()] == ["write"]
    assert tool.description == "Deletes an event."


def test_a_tool_action_that_would_break_the_scope_syntax_is_refused(admin_api, calendar):
    before = audit_count()

    response = admin_api.post(
        "/api/tools/", {"server": "calendar", "name": "x", "actions": ["read:all"]}, format="json"
    )

    assert response.status_code == 400
    assert "actions" in response.json()
    assert not Tool.objects.filter(name="x").exists()
    assert audit_count() == before
