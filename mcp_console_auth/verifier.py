"""Bearer-token verification for MCP servers, by the console's introspection endpoint (RFC 7662).

``ConsoleTokenVerifier`` implements the SDK's ``TokenVerifier`` protocol: every token is checked
with the console, on every request, so a revocation is visible on the very next call. Only a token
the console reports active *and* bound to this server (``aud`` equal to this server's resource
URI) is accepted: a token issued for another MCP server is never passed through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

logger = logging.getLogger(__name__)

METADATA_PATH = "/.well-known/oauth-authorization-server"


class ConsoleUnavailable(RuntimeError):
    """The console's metadata could not be read: the MCP server cannot check tokens."""


@dataclass(frozen=True)
class ConsoleMetadata:
    """What an MCP server needs from the console's RFC 8414 metadata."""

    issuer: str
    introspection_endpoint: str
    token_endpoint: str = ""  # for token exchange (``mcp_console_auth.exchange``)


def discover_console(console_url: str, *, timeout: float = 10.0) -> ConsoleMetadata:
    """Read the console's issuer and introspection endpoint from its RFC 8414 metadata."""
    url = console_url.rstrip("/") + METADATA_PATH
    try:
        response = httpx2.get(url, timeout=timeout, follow_redirects=False)
        response.raise_for_status()
        data = response.json()
        return ConsoleMetadata(
            issuer=data["issuer"],
            introspection_endpoint=data["introspection_endpoint"],
            token_endpoint=data.get("token_endpoint", ""),
        )
    except (httpx2.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ConsoleUnavailable(f"Cannot read the console's metadata at {url}: {exc!r}") from exc


@dataclass(frozen=True)
class ToolCallDecision:
    """The console's answer to "may this token call this tool action here, now?"."""

    allowed: bool
    reason: str
    access_token: AccessToken


class ConsoleTokenVerifier:
    """A ``TokenVerifier`` (``mcp.server.auth.provider``) that asks the console.

    ``client_id`` and ``client_secret`` are this MCP server's own credentials, given by the
    console when the server was registered; ``resource`` is its canonical resource URI, exactly
    as registered (e.g. ``https://calendar.example.com/mcp``).

    The verifier keeps one pooled HTTP client: use it from one event loop (the server's).
    """

    def __init__(
        self,
        console_url: str,
        client_id: str,
        client_secret: str,
        resource: str,
        *,
        metadata: ConsoleMetadata | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.metadata = metadata or discover_console(console_url)
        self.resource = resource
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self._timeout = timeout
        self._client: httpx2.AsyncClient | None = None
        # Set by the tool-scope guard for the request it has just checked with the console, so
        # the SDK's bearer middleware does not introspect the same token a second time.
        self._checked: ContextVar[AccessToken | None] = ContextVar(f"checked_{id(self)}", default=None)

    @property
    def issuer(self) -> str:
        return self.metadata.issuer

    def auth_settings(self) -> AuthSettings:
        """The SDK's auth settings for this server: the console as issuer, this resource's URI."""
        return AuthSettings(
            issuer_url=self.issuer,
            resource_server_url=self.resource,
            # The SDK refuses tokens whose resource is not ours too (we already check ``aud``).
            validate_token_resource=True,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        checked = self._checked.get()
        if checked is not None and checked.token == token:
            return checked
        return self._access_token(token, await self._introspect(token))

    async def check_tool_call(self, token: str, scope: str) -> ToolCallDecision | None:
        """Ask the console whether ``token`` may run ``scope`` (``tool:action``) on this server.

        None when the token is not usable here at all (inactive, revoked, another audience).
        The console records the decision as an audit event naming the human and the agent.
        """
        tool, _, action = scope.partition(":")
        answer = await self._introspect(token, tool=tool, action=action)
        access_token = self._access_token(token, answer)
        if access_token is None:
            return None
        decision = answer.get("decision") if isinstance(answer.get("decision"), dict) else {}
        return ToolCallDecision(
            allowed=decision.get("allowed") is True,
            reason=str(decision.get("reason", "")),
            access_token=access_token,
        )

    @contextmanager
    def checked(self, access_token: AccessToken) -> Iterator[None]:
        """Within this block, ``verify_token`` answers for ``access_token`` without a new call."""
        reset = self._checked.set(access_token)
        try:
            yield
        finally:
            self._checked.reset(reset)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _introspect(self, token: str, **context: str) -> dict[str, Any]:
        """The console's introspection answer; ``{"active": False}`` when it cannot be had."""
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False)
        try:
            response = await self._client.post(
                self.metadata.introspection_endpoint, data={"token": token, **context}, auth=self._auth
            )
        except httpx2.HTTPError as exc:
            logger.warning("Token introspection failed: %r", exc)
            return {"active": False}
        if response.status_code != 200:
            # 401 here means this server's own credentials are wrong: say so loudly.
            logger.warning("Token introspection answered %s: %s", response.status_code, response.text[:200])
            return {"active": False}
        try:
            answer = response.json()
        except ValueError:
            logger.warning("Token introspection answered with invalid JSON")
            return {"active": False}
        return answer if isinstance(answer, dict) else {"active": False}

    def _access_token(self, token: str, answer: dict[str, Any]) -> AccessToken | None:
        if answer.get("active") is not True:
            return None
        if answer.get("aud") != self.resource:
            # No token passthrough: a token for another MCP server is worthless here.
            logger.warning("Refused a token issued for %r, not %r", answer.get("aud"), self.resource)
            return None
        client_id, scope, exp = answer.get("client_id"), answer.get("scope", ""), answer.get("exp")
        if not isinstance(client_id, str) or not isinstance(scope, str) or not isinstance(exp, int):
            logger.warning("Token introspection answer lacks client_id, scope or exp")
            return None
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scope.split(),
            expires_at=exp,
            resource=answer["aud"],
            subject=answer.get("sub"),
            # Everything else the console said: iss (the SDK binds sessions to iss + sub),
            # username, act (the agent acting for the human), decision.
            claims={key: value for key, value in answer.items() if key != "active"},
        )
