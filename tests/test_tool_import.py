"""Importing an MCP server's tools from the live server (official SDK on loopback) into Tool rows."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx2
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from audit.models import AuditEvent
from console.roles import Role, assign_role
from policies.discovery import CONSOLE_CLIENT_ID, console_agent, discovery_token, mint_discovery_token
from policies.models import AccessToken, Agent, McpServer, Tool
from policies.tool_import import ToolImportError, import_tools
from tests.api_support import api_as
from tests.conftest import FORM, RegisteredServer, form, introspect, make_server
from tests.live_mcp import PagedMCPServer, serving, serving_protected
from tests.support import free_loopback_port

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]


def list_events(day: str) -> list[str]:
    """List the events of a day."""
    return []


def create_event(title: str, start: str) -> str:
    """Create an event."""
    return "created"


def delete_event(event_id: int) -> str:
    """Delete an event by id."""
    return "deleted"


def search_web(query: str) -> str:
    """Search the web."""
    return ""


def calendar_mcp(cls=MCPServer, **auth) -> MCPServer:
    mcp = cls("calendar", **auth)
    mcp.add_tool(list_events, annotations=ToolAnnotations(read_only_hint=True))
    mcp.add_tool(create_event, annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    mcp.add_tool(delete_event)  # no annotations: MCP's defaults, not read-only and destructive
    mcp.add_tool(search_web, annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    return mcp


def server_at(resource: str) -> McpServer:
    return make_server("calendar", resource, {}).server


def tools_of(server: McpServer) -> dict[str, tuple[str, list[str], bool]]:
    return {
        tool.name: (tool.risk, [action.name for action in tool.actions.all()], tool.available)
        for tool in Tool.objects.filter(server=server).prefetch_related("actions")
    }


def test_first_import_creates_tools_with_actions_and_risk_from_annotations():
    with serving(calendar_mcp()) as resource:
        server = server_at(resource)
        result = import_tools(server, by=None)

    assert sorted(result.added) == ["create_event", "delete_event", "list_events", "search_web"]
    assert result.removed == result.changed == result.unchanged == []
    assert tools_of(server) == {
        "list_events": ("low", ["read"], True),
        "search_web": ("medium", ["read"], True),
        "create_event": ("medium", ["write"], True),
        "delete_event": ("high", ["write"], True),
    }
    tool = Tool.objects.get(server=server, name="create_event")
    assert tool.description == "Create an event."
    assert tool.input_schema["required"] == ["title", "start"]
    assert tool.last_seen is not None
    server.refresh_from_db()
    assert server.tools_imported is not None
    event = AuditEvent.objects.get(event_type="tools.imported")
    assert event.server_name == "calendar"
    assert sorted(event.detail["added"]) == sorted(result.added)


def test_second_import_reports_added_removed_and_changed_tools_and_never_deletes():
    mcp = calendar_mcp()
    with serving(mcp) as resource:
        server = server_at(resource)
        import_tools(server, by=None)
        # The admin judges delete_event's risk and actions; a re-import must keep them.
        Tool.objects.filter(server=server, name="delete_event").update(risk="medium")
        mcp.remove_tool("search_web")
        mcp.remove_tool("create_event")
        mcp.add_tool(create_event, description="Create an event and invite everyone in the company.")
        mcp.add_tool(search_web, name="send_mail", description="Send a mail.")

        result = import_tools(server, by=None)

    assert result.added == ["send_mail"]
    assert result.removed == ["search_web"]
    assert result.changed == ["create_event"]
    assert sorted(result.unchanged) == ["delete_event", "list_events"]
    tools = tools_of(server)
    assert tools["search_web"] == ("medium", ["read"], False)  # still there, for its delegations
    assert tools["delete_event"] == ("medium", ["write"], True)
    assert Tool.objects.get(server=server, name="create_event").description == (
        "Create an event and invite everyone in the company."
    )


def test_a_tool_listed_again_becomes_available_again():
    mcp = calendar_mcp()
    with serving(mcp) as resource:
        server = server_at(resource)
        import_tools(server, by=None)
        mcp.remove_tool("list_events")
        assert import_tools(server, by=None).removed == ["list_events"]
        mcp.add_tool(list_events, annotations=ToolAnnotations(read_only_hint=True))

        result = import_tools(server, by=None)

    assert result.added == ["list_events"]
    assert Tool.objects.get(server=server, name="list_events").available


def test_import_follows_pagination_cursors():
    with serving(calendar_mcp(PagedMCPServer)) as resource:
        server = server_at(resource)
        result = import_tools(server, by=None)

    assert len(result.added) == 4


def test_a_protected_server_needs_the_bearer_token_which_is_used_once_and_not_kept():
    token = "s3cret-bearer-for-tools-list"
    with serving(calendar_mcp(), bearer_token=token) as resource:
        server = server_at(resource)
        with pytest.raises(ToolImportError, match="HTTP 401.*bearer token"):
            import_tools(server, by=None)
        assert not Tool.objects.filter(server=server).exists()

        result = import_tools(server, by=None, token=token)

    assert len(result.added) == 4
    assert not AuditEvent.objects.filter(detail__icontains=token).exists()
    assert token not in repr(AuditEvent.objects.values())


def test_an_unreachable_server_is_a_clear_error_and_changes_nothing(calendar):
    with serving(calendar_mcp()) as resource:
        pass  # stopped: nothing listens there any more
    server = calendar.server
    server.resource = resource
    server.save()
    before = tools_of(server)

    with pytest.raises(ToolImportError, match="Could not reach the server"):
        import_tools(server, by=None)

    assert tools_of(server) == before
    assert not AuditEvent.objects.filter(event_type="tools.imported").exists()


def test_a_tool_whose_name_cannot_be_a_scope_is_skipped_with_the_reason():
    mcp = calendar_mcp()
    mcp.add_tool(search_web, name="search web")
    with serving(mcp) as resource:
        server = server_at(resource)
        result = import_tools(server, by=None)

    assert "search web" in result.skipped
    assert not Tool.objects.filter(name="search web").exists()


# --- Servers protected by this console: the console's own discovery token ---------------------

TOOL_SCOPES = {
    "list_events": "list_events:read",
    "create_event": "create_event:write",
    "delete_event": "delete_event:write",
    "search_web": "search_web:read",
}


@pytest.fixture
def security_admin(db) -> User:
    user = User.objects.create_user("secadmin", password="secadmin-password-123")
    assign_role(user, Role.SECURITY_ADMIN)
    return user


def registered_at_free_port(name: str = "calendar") -> RegisteredServer:
    return make_server(name, f"http://127.0.0.1:{free_loopback_port()}/mcp", {})


def console_tokens() -> list[AccessToken]:
    return list(AccessToken.objects.filter(application__client_id=CONSOLE_CLIENT_ID))


def test_the_admin_imports_from_a_server_protected_by_this_console_without_pasting_a_token(
    live_console, security_admin
):
    registered = registered_at_free_port()
    admin = Client()
    admin.force_login(security_admin)
    with serving_protected(calendar_mcp, live_console, registered, TOOL_SCOPES):
        with pytest.raises(ToolImportError, match="HTTP 401"):
            import_tools(registered.server, by=None)  # no token at all: the server is really protected

        response = admin.post(
            f"/admin/policies/mcpserver/{registered.server.pk}/import-tools/", {"token": ""}
        )

    assert response.status_code == 200
    assert "error" not in response.context, response.context.get("error")
    assert sorted(response.context["result"].added) == sorted(TOOL_SCOPES)
    assert 'data-testid="added">' in response.content.decode()
    assert sorted(Tool.objects.filter(server=registered.server).values_list("name", flat=True)) == sorted(
        TOOL_SCOPES
    )
    assert console_tokens() == []  # deleted once the listing was done
    issued = AuditEvent.objects.get(event_type="token.issued", detail__purpose="tool_discovery")
    assert (issued.human_username, issued.agent_client_id, issued.server_name) == (
        "secadmin",
        CONSOLE_CLIENT_ID,
        "calendar",
    )
    # The server checked the token with the console, which allowed it for discovery, naming the admin.
    checks = AuditEvent.objects.filter(event_type="introspection", token_checksum=issued.token_checksum)
    assert checks.exists()
    assert set(checks.values_list("outcome", "reason", "human_username")) == {
        ("allow", "tool_discovery", "secadmin")
    }
    assert AuditEvent.objects.filter(event_type="tools.imported", actor_username="secadmin").exists()


def test_the_api_imports_from_a_server_protected_by_this_console_without_a_token(
    live_console, security_admin
):
    registered = registered_at_free_port()
    with serving_protected(calendar_mcp, live_console, registered, TOOL_SCOPES):
        response = api_as(security_admin).post(f"/api/servers/{registered.server.name}/import-tools/", {})

    assert response.status_code == 200, response.content
    assert sorted(response.json()["added"]) == sorted(TOOL_SCOPES)
    assert console_tokens() == []


def test_the_discovery_token_is_deleted_when_the_listing_fails(security_admin):
    # A server behind another authorization server refuses the console's token.
    with serving(calendar_mcp(), bearer_token="someone-elses-token") as resource:
        server = server_at(resource)
        with pytest.raises(ToolImportError, match="HTTP 401.*paste"):
            import_tools(server, by=security_admin)

    assert console_tokens() == []
    assert not Tool.objects.filter(server=server).exists()
    assert AuditEvent.objects.filter(event_type="token.issued", detail__purpose="tool_discovery").count() == 1


def test_a_discovery_token_is_active_with_no_scope_at_its_server_only(calendar, mail, security_admin):
    token, raw = mint_discovery_token(calendar.server, security_admin)

    own = introspect(calendar, raw).json()
    other = introspect(mail, raw).json()

    assert own["active"] is True
    assert own["scope"] == ""
    assert (own["sub"], own["username"]) == (str(security_admin.pk), "secadmin")
    assert own["client_id"] == own["act"]["sub"] == CONSOLE_CLIENT_ID
    assert own["aud"] == calendar.resource
    assert other == {"active": False}
    events = AuditEvent.objects.filter(event_type="introspection", token_id=token.pk).order_by("id")
    assert list(events.values_list("server_name", "outcome", "reason")) == [
        ("calendar", "allow", "tool_discovery"),
        ("mail", "deny", "wrong_audience"),
    ]


def test_a_discovery_token_is_denied_for_every_tool_call(calendar, security_admin):
    _, raw = mint_discovery_token(calendar.server, security_admin)

    for tool, action in [("list_events", "read"), ("create_event", "write"), ("nope", "read")]:
        answer = introspect(calendar, raw, tool=tool, action=action).json()
        assert answer["scope"] == ""
        assert answer["decision"] == {
            "tool": tool,
            "action": action,
            "allowed": False,
            "reason": "scope_missing",
        }
    assert set(
        AuditEvent.objects.filter(event_type="tool_call.decision").values_list("outcome", "reason")
    ) == {("deny", "scope_missing")}


def test_a_protected_server_refuses_a_tool_call_with_a_discovery_token(live_console, security_admin):
    registered = registered_at_free_port()
    ran: list[str] = []

    def build(**auth) -> MCPServer:
        mcp = calendar_mcp(**auth)
        mcp.remove_tool("list_events")
        mcp.add_tool(lambda: ran.append("list_events") or [], name="list_events")
        return mcp

    with serving_protected(build, live_console, registered, TOOL_SCOPES):
        with discovery_token(registered.server, security_admin) as raw:
            response = httpx2.post(
                registered.resource,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_events"}},
                headers={"Authorization": f"Bearer {raw}", "Accept": "application/json, text/event-stream"},
                timeout=10,
            )

    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert ran == []


def test_a_discovery_token_is_inactive_once_expired_or_its_admin_inactive(calendar, security_admin):
    token, raw = mint_discovery_token(calendar.server, security_admin)
    AccessToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert introspect(calendar, raw).json() == {"active": False}

    token, raw = mint_discovery_token(calendar.server, security_admin)
    User.objects.filter(pk=security_admin.pk).update(is_active=False)
    assert introspect(calendar, raw).json() == {"active": False}
    reasons = AuditEvent.objects.filter(event_type="introspection").values_list("reason", flat=True)
    assert sorted(reasons) == ["expired", "human_inactive"]


def test_a_discovery_token_lives_sixty_seconds_bound_to_its_server_and_is_stored_hashed(
    calendar, security_admin
):
    token, raw = mint_discovery_token(calendar.server, security_admin)

    token.refresh_from_db()
    assert token.resource == [calendar.resource]
    assert (token.scope, token.delegation, token.user) == ("", None, security_admin)
    assert timedelta(seconds=55) < token.expires - token.created <= timedelta(seconds=60)
    assert token.token == "" and raw not in repr(AccessToken.objects.values())


def dcr_register(client: Client, metadata: dict) -> dict:
    response = client.post("/oauth/register/", json.dumps(metadata), "application/json")
    assert response.status_code == 201, response.content
    return response.json()


def test_an_agent_registered_by_dcr_cannot_become_or_act_as_the_consoles_agent(calendar, security_admin):
    builtin = console_agent()
    client = Client()
    registered = dcr_register(
        client,
        {
            "client_name": builtin.name,
            "redirect_uris": ["http://127.0.0.1:53682/callback"],
            "client_id": CONSOLE_CLIENT_ID,
            "registration_source": "console",
        },
    )
    assert registered["client_id"] != CONSOLE_CLIENT_ID
    assert Agent.objects.get(client_id=registered["client_id"]).registration_source == "dcr"
    assert console_agent() == builtin

    # Its RFC 7592 registration token has no delegation, like a discovery token, and is worth
    # nothing at any MCP server, even once bound to one.
    registration = AccessToken.objects.get(application__client_id=registered["client_id"])
    AccessToken.objects.filter(pk=registration.pk).update(resource=[calendar.resource], user=security_admin)
    assert introspect(calendar, registered["registration_access_token"]).json() == {"active": False}
    assert AuditEvent.objects.get(event_type="introspection").reason == "no_delegation"

    # The built-in agent itself cannot be used at the token endpoint: no grant it could use.
    answer = client.post(
        "/oauth/token/",
        form({"grant_type": "client_credentials", "client_id": CONSOLE_CLIENT_ID, "client_secret": "x"}),
        FORM,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_an_agent_an_admin_created_with_the_consoles_client_id_is_not_the_consoles_agent(
    calendar, security_admin
):
    impostor = Agent.objects.create(
        name="look-alike",
        client_id=CONSOLE_CLIENT_ID,
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_CLIENT_CREDENTIALS,
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    token = AccessToken.objects.create(
        user=security_admin,
        application=impostor,
        token="look-alike-token",
        scope="",
        resource=[calendar.resource],
        expires=timezone.now() + timedelta(seconds=60),
    )

    assert introspect(calendar, "look-alike-token").json() == {"active": False}
    assert AuditEvent.objects.get(event_type="introspection", token_id=token.pk).reason == "no_delegation"
    with serving(calendar_mcp()) as resource:
        McpServer.objects.filter(pk=calendar.server.pk).update(resource=resource)
        calendar.server.refresh_from_db()
        with pytest.raises(ToolImportError, match="Another agent has the console's client id"):
            import_tools(calendar.server, by=security_admin)
