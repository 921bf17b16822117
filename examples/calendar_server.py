"""
A calendar MCP server protected by the MCP Policy Console.

Each tool needs its own scope: list_events:read, create_event:write, delete_event:write. Tokens
are checked with the console's introspection on every request; a tool call outside the granted
scopes is answered with 403 insufficient_scope, which MCP clients turn into a step-up request.
Each tool call's result is reported to the console's audit trail (its event API), in batches.

Configuration (environment):
  CONSOLE_URL               the console, e.g. http://127.0.0.1:8000
  MCP_SERVER_CLIENT_ID      this server's credentials, from the console (``make run`` prints them)
  MCP_SERVER_CLIENT_SECRET
  MCP_SERVER_URL            where this server listens (default http://127.0.0.1:8001); its MCP
                            endpoint, MCP_SERVER_URL + "/mcp", must be the resource registered
                            in the console.

Run: python examples/calendar_server.py
"""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlsplit

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from mcp_console_auth import ConsoleTokenVerifier, EventReporter, ToolScopeGuard

TOOL_SCOPES = {
    "list_events": "list_events:read",
    "create_event": "create_event:write",
    "delete_event": "delete_event:write",
}


def build_app(console_url: str, client_id: str, client_secret: str, server_url: str) -> ToolScopeGuard:
    resource = server_url.rstrip("/") + "/mcp"
    verifier = ConsoleTokenVerifier(console_url, client_id, client_secret, resource)
    # Each tool call's result (success or error, duration, a digest of the arguments) goes to the
    # console's audit trail, next to the console's own decision to allow the call.
    reporter = EventReporter(console_url, client_id, client_secret)
    mcp = MCPServer("calendar", token_verifier=verifier, auth=verifier.auth_settings())
    events: dict[int, dict[str, str]] = {}
    ids = itertools.count(1)

    @mcp.tool()
    @reporter.reported(TOOL_SCOPES["list_events"])
    def list_events() -> list[dict[str, str | int]]:
        """List the events in the calendar."""
        return [{"id": event_id, **event} for event_id, event in events.items()]

    @mcp.tool()
    @reporter.reported(TOOL_SCOPES["create_event"])
    def create_event(title: str, start: str) -> dict[str, str | int]:
        """Create an event; start is an ISO 8601 date-time."""
        token = get_access_token()
        # The console names the human the agent acts for: the event records who asked for it.
        human = str((token.claims or {}).get("username", "")) if token else ""
        event_id = next(ids)
        events[event_id] = {"title": title, "start": start, "created_by": human}
        return {"id": event_id, **events[event_id]}

    @mcp.tool()
    @reporter.reported(TOOL_SCOPES["delete_event"])
    def delete_event(event_id: int) -> str:
        """Delete an event by id."""
        return "deleted" if events.pop(event_id, None) else "no such event"

    host = urlsplit(server_url).hostname or "127.0.0.1"
    return ToolScopeGuard(mcp.streamable_http_app(host=host), verifier, TOOL_SCOPES, reporter=reporter)


def main() -> None:
    server_url = os.environ.get("MCP_SERVER_URL", "http://127.0.0.1:8001")
    app = build_app(
        console_url=os.environ.get("CONSOLE_URL", "http://127.0.0.1:8000"),
        client_id=os.environ["MCP_SERVER_CLIENT_ID"],
        client_secret=os.environ["MCP_SERVER_CLIENT_SECRET"],
        server_url=server_url,
    )
    parts = urlsplit(server_url)
    uvicorn.run(app, host=parts.hostname or "127.0.0.1", port=parts.port or 8001)


if __name__ == "__main__":
    main()
