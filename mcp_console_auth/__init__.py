"""
Protect an MCP server (official ``mcp`` SDK, 2.x) with the MCP Policy Console.

No Django needed: this package talks to the console over HTTP only. Usage::

    verifier = ConsoleTokenVerifier(CONSOLE_URL, CLIENT_ID, CLIENT_SECRET, "https://calendar.example.com/mcp")
    reporter = EventReporter(CONSOLE_URL, CLIENT_ID, CLIENT_SECRET)
    mcp = MCPServer("calendar", token_verifier=verifier, auth=verifier.auth_settings())

    @mcp.tool()
    @reporter.reported("list_events:read")
    def list_events() -> list[dict]: ...

    app = ToolScopeGuard(
        mcp.streamable_http_app(), verifier, {"list_events": "list_events:read"}, reporter=reporter
    )

- ``ConsoleTokenVerifier`` (the SDK's ``TokenVerifier``) introspects every token with the console,
  using this server's credentials, and accepts only live tokens bound to this server.
- ``ToolScopeGuard`` checks, before a tool runs, that the token may use the tool's scope
  (``tool:action``); if not, it answers 403 ``insufficient_scope`` naming the scope (step-up).
  It also serves the protected resource metadata (RFC 9728) that sends clients to the console.
- ``TokenExchanger`` (RFC 8693) turns the token a tool received into a token bound to another
  MCP server, for the same human and agent, so the tool can call that server's tools.
- ``EventReporter`` reports each tool call's result (success or error, duration, a digest of the
  arguments) to the console's audit trail, in batches, with this server's credentials.
"""

from mcp_console_auth.exchange import ExchangedToken, TokenExchanger, TokenExchangeRefused
from mcp_console_auth.guard import ToolScopeGuard
from mcp_console_auth.reporter import EventReporter, arguments_digest
from mcp_console_auth.verifier import (
    ConsoleMetadata,
    ConsoleTokenVerifier,
    ConsoleUnavailable,
    ToolCallDecision,
    discover_console,
)

__all__ = [
    "ConsoleMetadata",
    "ConsoleTokenVerifier",
    "ConsoleUnavailable",
    "EventReporter",
    "ExchangedToken",
    "ToolCallDecision",
    "TokenExchangeRefused",
    "TokenExchanger",
    "ToolScopeGuard",
    "arguments_digest",
    "discover_console",
]
