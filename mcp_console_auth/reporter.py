"""Report what happened after each tool call to the console's event API, for the audit trail.

``EventReporter`` buffers tool-call results and posts them in batches with this MCP server's own
credentials. Each result carries an event id chosen here, so a batch sent again after a network
error is recorded once. The console never receives the arguments, only a SHA-256 of their
canonical JSON, nor the bearer token, only its SHA-256 (which the console keeps as the token's
checksum).

    reporter = EventReporter(CONSOLE_URL, CLIENT_ID, CLIENT_SECRET)

    @mcp.tool()
    @reporter.reported("list_events:read")
    def list_events() -> list[dict]: ...
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import httpx2
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from pydantic_core import to_jsonable_python

logger = logging.getLogger(__name__)

EVENTS_PATH = "/api/audit/server-events/"
MAX_BATCH_EVENTS = 500  # the console's limit per request


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the arguments' canonical JSON: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(
        to_jsonable_python(dict(arguments)), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class EventReporter:
    """Buffers tool-call results and sends them to the console in batches, in the background.

    Results the console could not take (network error, console down, 5xx, wrong credentials)
    stay buffered and are sent again with the same event ids; at most ``max_buffered`` are kept,
    the oldest dropped first, with a warning. Events the console refuses (400) are logged and
    dropped: sending them again would not change the answer. Use it from one event loop (the
    server's), and ``await aclose()`` on shutdown to send what is left.
    """

    def __init__(
        self,
        console_url: str,
        client_id: str,
        client_secret: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_buffered: int = 10_000,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = console_url.rstrip("/") + EVENTS_PATH
        self.batch_size = min(batch_size, MAX_BATCH_EVENTS)
        self.flush_interval = flush_interval
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self._timeout = timeout
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffered)
        self._client: httpx2.AsyncClient | None = None
        self._sender: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    @property
    def pending(self) -> int:
        """How many results wait to be sent."""
        return len(self._buffer)

    def report(
        self,
        *,
        token: str,
        scope: str,
        outcome: str,
        duration_ms: int,
        arguments: Mapping[str, Any],
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> str:
        """Buffer one tool-call result (``outcome`` "success" or "error"); return its event id."""
        tool, _, action = scope.partition(":")
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "token_checksum": hashlib.sha256(token.encode()).hexdigest(),
            "tool": tool,
            "action": action,
            "outcome": outcome,
            "duration_ms": max(0, int(duration_ms)),
            "arguments_digest": arguments_digest(arguments),
            "occurred": datetime.now(UTC).isoformat(),
        }
        if reason:
            event["reason"] = reason
        if detail:
            event["detail"] = detail
        if len(self._buffer) == self._buffer.maxlen:
            logger.warning("Audit event buffer full: dropping the oldest unsent tool-call result")
        self._buffer.append(event)
        self._start_sender()
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return event["event_id"]

    def reported(self, scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorate a tool so that each call's result is reported, under ``scope`` (tool:action)."""

        def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
            is_async = asyncio.iscoroutinefunction(function)

            @functools.wraps(function)
            async def tool(*args: Any, **kwargs: Any) -> Any:
                started, outcome = time.monotonic(), "error"
                try:
                    if is_async:
                        result = await function(*args, **kwargs)
                    else:
                        # As the SDK runs a sync tool: in a worker thread.
                        result = await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))
                    outcome = "success"
                    return result
                finally:
                    access_token = get_access_token()
                    if access_token is not None:
                        self.report(
                            token=access_token.token,
                            scope=scope,
                            outcome=outcome,
                            reason="" if outcome == "success" else "tool_error",
                            duration_ms=round((time.monotonic() - started) * 1000),
                            arguments={k: v for k, v in kwargs.items() if not isinstance(v, Context)},
                        )

            return tool

        return decorate

    async def flush(self) -> None:
        """Send what is buffered now; stop at the first batch the console could not take."""
        async with self._flushing:
            while self._buffer:
                batch = [self._buffer[index] for index in range(min(self.batch_size, len(self._buffer)))]
                settled = await self._send(batch)
                if settled is None:
                    return
                for event_id in settled:
                    self._remove(event_id)

    async def aclose(self) -> None:
        """Stop the background sender, send what is left, close the HTTP client."""
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass
            self._sender = None
        await self.flush()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _start_sender(self) -> None:
        if self._sender is not None and not self._sender.done():
            return
        try:
            self._sender = asyncio.get_running_loop().create_task(self._send_in_background())
        except RuntimeError:
            pass  # no loop running: sent by the next flush

    async def _send_in_background(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the sender must outlive any surprise; the events stay buffered
                logger.exception("Sending audit events failed")

    async def _send(self, batch: list[dict[str, Any]]) -> list[str] | None:
        """The event ids the console settled (recorded, duplicate or refused); None: try later."""
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False)
        try:
            response = await self._client.post(self.endpoint, json={"events": batch}, auth=self._auth)
        except httpx2.HTTPError as exc:
            logger.warning("Could not send %d audit events: %r", len(batch), exc)
            return None
        ids = [event["event_id"] for event in batch]
        if response.status_code == 200:
            return ids
        answer = _json(response)
        if response.status_code == 413 and self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            return []
        if response.status_code in (400, 413):
            refused = answer.get("events") if isinstance(answer.get("events"), list) else []
            if not refused:
                logger.error("The console refused %d audit events: %s", len(batch), response.text[:500])
                return ids
            for item in refused:
                event_id, errors = item.get("event_id"), item.get("errors")
                logger.error("The console refused audit event %s: %s", event_id, errors)
            return [item.get("event_id") for item in refused]
        # 401 means this server's own credentials are wrong: say so loudly, keep the events.
        logger.warning("The console's event API answered %s: %s", response.status_code, response.text[:200])
        return None

    def _remove(self, event_id: str) -> None:
        for event in self._buffer:
            if event["event_id"] == event_id:
                self._buffer.remove(event)
                return


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
