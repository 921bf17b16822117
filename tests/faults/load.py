"""Real HTTP load on the console: MCP-server introspection calls from a few client threads.

Every call carries its own ``X-Request-ID`` (the audit event's correlation id), so a test can
check afterwards that each call the console acknowledged left exactly its event.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlencode

from tests.faults.stack import Seed


@dataclass
class Call:
    request_id: str
    token: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all (connection refused or reset)
    body: dict | str | None
    headers: dict[str, str]

    @property
    def active(self) -> bool | None:
        return self.body.get("active") if isinstance(self.body, dict) else None


def post(url: str, data: dict, headers: dict[str, str], timeout: float = 60) -> tuple[int, dict, dict | str]:
    """POST a form; returns (status, headers, JSON body or text). Status 0 when nothing answered."""
    request = urllib.request.Request(
        url,
        urlencode(data).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers), _body(response.read(), response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _body(error.read(), error.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}, None


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict, dict | str]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=timeout
        ) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers), _body(response.read(), response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _body(error.read(), error.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}, None


def _body(raw: bytes, headers) -> dict | str:
    if (headers.get("Content-Type") or "").startswith("application/json"):
        return json.loads(raw)
    return raw.decode("utf-8", "replace")


def introspect(console_url: str, seed: Seed, token: str, request_id: str) -> Call:
    started = time.monotonic()
    status, headers, body = post(
        console_url + "/oauth/introspect/",
        {"token": token},
        {"Authorization": seed.server_basic, "X-Request-ID": request_id},
    )
    return Call(request_id, token, started, time.monotonic(), status, body, headers)


def revoke(console_url: str, seed: Seed, token: str) -> int:
    """RFC 7009 revocation by the agent that holds the token (a public client)."""
    status, _, _ = post(
        console_url + "/oauth/revoke/", {"token": token, "client_id": seed.agent_client_id}, {}
    )
    return status


@dataclass
class Load:
    """``clients`` threads introspecting ``tokens`` round-robin until stopped (or ``limit`` calls)."""

    console_url: str
    seed: Seed
    prefix: str
    clients: int = 3
    limit: int | None = None
    tokens: list[str] | None = None
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        self._tokens = itertools.cycle(self.tokens or self.seed.tokens)

    def _client(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = next(self._numbers)
                token = next(self._tokens)
            if self.limit is not None and n >= self.limit:
                return
            call = introspect(self.console_url, self.seed, token, f"{self.prefix}-{n}")
            with self._lock:
                self.calls.append(call)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def wait(self, calls: int, timeout: float = 120) -> None:
        """Until at least ``calls`` more calls than now have been answered (or refused)."""
        target = len(self.calls) + calls
        deadline = time.monotonic() + timeout
        while len(self.calls) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load made only {len(self.calls)} of {target} calls in {timeout} s")
            time.sleep(0.05)

    def join(self, timeout: float = 600) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout)

    def by_status(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for call in self.calls:
            counts[call.status] = counts.get(call.status, 0) + 1
        return counts
