"""Importing an MCP server's tools from the live server (official SDK on loopback) into Tool rows."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from audit.models import AuditEvent
from policies.models import McpServer, Tool
from policies.tool_import import ToolImportError, import_tools
from tests.conftest import make_server
from tests.live_mcp import PagedMCPServer, serving

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


def calendar_mcp(cls=MCPServer) -> MCPServer:
    mcp = cls("calendar")
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
