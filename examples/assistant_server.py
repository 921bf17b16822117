"""
An assistant MCP server whose tool calls another MCP server, through token exchange (RFC 8693).

Its one tool, ``agenda`` (scope ``agenda:read``), reads the human's calendar: it exchanges the
agent's token it received (bound to this server, so useless at the calendar) for a token bound
to the calendar server, then calls the calendar's ``list_events`` with the official MCP SDK
client. The console allows the exchange only when a hop policy lets this server exchange for
the calendar and the human has delegated ``list_events:read`` to the same agent on the calendar;
the calendar then sees the human as ``sub`` and ``act`` = this server, then the agent.

Configuration (environment), as ``calendar_server.py``, plus:
  CALENDAR_MCP_URL   the calendar server's MCP endpoint (its resource URI),
                     default http://127.0.0.1:8001/mcp
  MCP_SERVER_URL     where this server listens, default http://127.0.0.1:8002

Run: python examples/assistant_server.py
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import httpx2
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from mcp_console_auth import ConsoleTokenVerifier, EventReporter, TokenExchanger, ToolScopeGuard

TOOL_SCOPES = {"agenda": "agenda:read"}


async def call_tool(server_url: str, bearer_token: str, tool: str, arguments: dict[str, Any]) -> Any:
    """Call ``tool`` on the MCP server at ``server_url`` with ``bearer_token``; its structured result."""
    headers = {"Authorization": f"Bearer {bearer_token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with streamable_http_client(server_url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed at {server_url}: {result.content}")
    return result.structured_content


def build_app(
    console_url: str, client_id: str, client_secret: str, server_url: str, calendar_url: str
) -> ToolScopeGuard:
    resource = server_url.rstrip("/") + "/mcp"
    verifier = ConsoleTokenVerifier(console_url, client_id, client_secret, resource)
    reporter = EventReporter(console_url, client_id, client_secret)
    exchanger = TokenExchanger(console_url, client_id, client_secret, metadata=verifier.metadata)
    mcp = MCPServer("assistant", token_verifier=verifier, auth=verifier.auth_settings())

    @mcp.tool()
    @reporter.reported(TOOL_SCOPES["agenda"])
    async def agenda() -> dict[str, Any]:
        """The human's agenda, read from their calendar server."""
        # Never pass the agent's token on: exchange it for one bound to the calendar.
        token = await exchanger.exchange_current_token(calendar_url, "list_events:read")
        return {"calendar": await call_tool(calendar_url, token.access_token, "list_events", {})}

    host = urlsplit(server_url).hostname or "127.0.0.1"
    return ToolScopeGuard(mcp.streamable_http_app(host=host), verifier, TOOL_SCOPES, reporter=reporter)


def main() -> None:
    server_url = os.environ.get("MCP_SERVER_URL", "http://127.0.0.1:8002")
    app = build_app(
        console_url=os.environ.get("CONSOLE_URL", "http://127.0.0.1:8000"),
        client_id=os.environ["MCP_SERVER_CLIENT_ID"],
        client_secret=os.environ["MCP_SERVER_CLIENT_SECRET"],
        server_url=server_url,
        calendar_url=os.environ.get("CALENDAR_MCP_URL", "http://127.0.0.1:8001/mcp"),
    )
    parts = urlsplit(server_url)
    uvicorn.run(app, host=parts.hostname or "127.0.0.1", port=parts.port or 8002)


if __name__ == "__main__":
    main()
