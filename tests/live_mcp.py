"""An MCP server of the official SDK (``MCPServer``) serving streamable HTTP on a free loopback port,
in a thread of the test process, so a test can change its tools between two imports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ListToolsResult, PaginatedRequestParams

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
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
