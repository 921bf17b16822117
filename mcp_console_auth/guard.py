"""Per-tool scopes with step-up, around the SDK's streamable HTTP app.

The SDK checks a token once per HTTP request and knows nothing of tools; its bearer middleware
names no ``scope=`` in its challenges. ``ToolScopeGuard`` sits in front of the app: for a JSON-RPC
``tools/call`` it asks the console whether the token may run that tool's scope (``tool:action``)
and, when it may not, answers before the tool runs with 403 and
``WWW-Authenticate: Bearer error="insufficient_scope", scope="...", resource_metadata="..."``,
so that an MCP client can ask its human for the missing scope (step-up).

With an ``EventReporter``, it sends the results still buffered when the server shuts down.

It also serves this server's protected resource metadata (RFC 9728) with the tool scopes as
``scopes_supported``: the SDK would list only ``required_scopes``, which it demands of every
request, so tools with different scopes could not share one server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_console_auth.reporter import EventReporter
from mcp_console_auth.verifier import ConsoleTokenVerifier

PARSE_ERROR = -32700
INVALID_PARAMS = -32602


class ToolScopeGuard:
    """ASGI middleware: ``tool_scopes`` maps each tool name to the scope it needs.

    A ``tools/call`` for a tool with no declared scope is refused (fail closed), so a tool added
    to the server without a scope cannot be called with any valid token.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: ConsoleTokenVerifier,
        tool_scopes: Mapping[str, str],
        *,
        reporter: EventReporter | None = None,
        max_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.reporter = reporter
        self.tool_scopes = dict(tool_scopes)
        self.mcp_path = urlsplit(verifier.resource).path or "/"
        settings = verifier.auth_settings()
        self.resource_metadata_url = str(build_resource_metadata_url(settings.resource_server_url))
        (self._metadata_route,) = create_protected_resource_routes(
            resource_url=settings.resource_server_url,
            authorization_servers=[settings.issuer_url],
            scopes_supported=sorted(set(self.tool_scopes.values())),
        )
        # The whole body is read before the check: bounded as the SDK bounds it.
        self._guarded = RequestBodyLimitMiddleware(self._check_tool_calls, max_body_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._closing_on_shutdown(receive), send)
        elif scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == self._metadata_route.path:
            await self._metadata_route(scope, receive, send)
        elif scope["path"] == self.mcp_path and scope["method"] == "POST":
            await self._guarded(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def aclose(self) -> None:
        """Send the tool-call results still buffered; close the HTTP clients."""
        if self.reporter is not None:
            await self.reporter.aclose()
        await self.verifier.aclose()

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        async def receive_then_close() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return receive_then_close

    async def _check_tool_calls(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, replay = await _buffer_body(receive)
        try:
            messages = json.loads(body)
        except ValueError:
            # Fail closed: what we cannot read, we cannot check.
            await _jsonrpc_error(None, PARSE_ERROR, "Parse error", 400)(scope, replay, send)
            return
        calls = _tool_calls(messages)
        token = _bearer_token(scope)
        if not calls or token is None:
            # Nothing to check here, or no token: the SDK's bearer middleware answers 401.
            await self.app(scope, replay, send)
            return
        for request_id, name in calls:
            if name not in self.tool_scopes:
                message = f"Tool '{name}' has no declared scope on this server."
                await _jsonrpc_error(request_id, INVALID_PARAMS, message, 403)(scope, replay, send)
                return
        missing: list[str] = []
        access_token = None
        for needed in dict.fromkeys(self.tool_scopes[name] for _, name in calls):
            decision = await self.verifier.check_tool_call(token, needed)
            if decision is None:
                # Not usable here at all (revoked, expired, another audience): the SDK answers 401.
                await self.app(scope, replay, send)
                return
            if not decision.allowed:
                missing.append(needed)
            access_token = decision.access_token
        if missing:
            await self._insufficient_scope(missing)(scope, replay, send)
            return
        with self.verifier.checked(access_token):
            await self.app(scope, replay, send)

    def _insufficient_scope(self, missing: list[str]) -> JSONResponse:
        scope = " ".join(missing)
        description = f"This call needs {scope}, which the token does not carry."
        challenge = (
            f'Bearer error="insufficient_scope", scope="{scope}", '
            f'resource_metadata="{self.resource_metadata_url}", error_description="{description}"'
        )
        return JSONResponse(
            {"error": "insufficient_scope", "error_description": description, "scope": scope},
            status_code=403,
            headers={"WWW-Authenticate": challenge},
        )


def _tool_calls(messages: Any) -> list[tuple[Any, str]]:
    """(id, tool name) of every ``tools/call`` request in a JSON-RPC message or batch."""
    calls = []
    for message in messages if isinstance(messages, list) else [messages]:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            # A call without a string name is invalid: the SDK refuses it without running anything.
            if isinstance(name, str):
                calls.append((message.get("id"), name))
    return calls


def _bearer_token(scope: Scope) -> str | None:
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a ``receive`` that plays it again."""
    chunks, pending = [], []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)  # a disconnect: the app sees it after the body
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending.insert(0, {"type": "http.request", "body": body, "more_body": False})

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return body, replay


def _jsonrpc_error(request_id: Any, code: int, message: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}, status_code=status
    )
