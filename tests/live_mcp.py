"""An MCP server of the official SDK (``MCPServer``) serving streamable HTTP on a free loopback port,
in a thread of the test process, so a test can change its tools between two imports; open, behind
a fixed bearer token, or protected by the console (``mcp_console_auth``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ListToolsResult, PaginatedRequestParams

from mcp_console_auth import ConsoleTokenVerifier, ToolScopeGuard
from tests.conftest import RegisteredServer
from tests.support import free_loopback_port


class PagedMCPServer(MCPServer):
    """Lists its tools ``page_size`` at a time, with a cursor, as a large server would."""

    page_size = 2

    async def _handle_list_tools(self, ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


class RequireBearer:
    """ASGI wrapper: 401 unless the request carries ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()
        self.seen_authorizations: list[bytes] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            authorization = dict(scope["headers"]).get(b"authorization", b"")
            self.seen_authorizations.append(authorization)
            if authorization != self.expected:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


@contextmanager
def serving(mcp: MCPServer, bearer_token: str | None = None) -> Iterator[str]:
    """Serve ``mcp`` on loopback while the block runs; yields its MCP endpoint (the resource URI)."""
    port = free_loopback_port()
    app = mcp.streamable_http_app(host="127.0.0.1")
    if bearer_token is not None:
        app = RequireBearer(app, bearer_token)
    with serving_app(app, port):
        yield f"http://127.0.0.1:{port}/mcp"


@contextmanager
def serving_protected(
    build: Callable[..., MCPServer], console_url: str, server: RegisteredServer, tool_scopes: dict[str, str]
) -> Iterator[ToolScopeGuard]:
    """Serve the MCP server ``build(token_verifier=..., auth=...)`` at ``server``'s resource,
    protected by the console as ``mcp_console_auth`` does it: every token introspected with
    ``server``'s credentials, every tool call checked against ``tool_scopes``."""
    verifier = ConsoleTokenVerifier(console_url, server.client_id, server.client_secret, server.resource)
    mcp = build(token_verifier=verifier, auth=verifier.auth_settings())
    guard = ToolScopeGuard(mcp.streamable_http_app(host="127.0.0.1"), verifier, tool_scopes)
    with serving_app(guard, urlsplit(server.resource).port):
        yield guard


@contextmanager
def serving_app(app, port: int) -> Iterator[None]:
    """Serve the ASGI ``app`` on loopback ``port`` in a thread while the block runs."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the MCP server did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
