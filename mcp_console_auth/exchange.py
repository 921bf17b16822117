"""Token exchange (RFC 8693) for MCP servers that call other MCP servers.

A tool of server A that needs a tool of server B must not pass the agent's token on (it is bound
to A, and B refuses it). It asks the console for a token bound to B instead, presenting the token
it received, with A's own credentials::

    exchanger = TokenExchanger(CONSOLE_URL, CLIENT_ID, CLIENT_SECRET)

    @mcp.tool()
    async def agenda() -> dict:
        token = await exchanger.exchange_current_token("https://calendar.example.com/mcp", "list_events:read")
        ...  # call server B with ``Authorization: Bearer {token.access_token}``

The console decides (a hop policy A -> B, the human's own delegation on B, the depth limit) and
records the exchange; the new token keeps the human as ``sub`` and names A, then the agent, in
``act``. It never outlives the token it came from, and comes with no refresh token: exchange
again when it expires.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
from mcp.server.auth.middleware.auth_context import get_access_token

from mcp_console_auth.verifier import ConsoleMetadata, ConsoleUnavailable, discover_console

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@dataclass(frozen=True)
class ExchangedToken:
    access_token: str
    expires_in: int
    scope: str


class TokenExchangeRefused(RuntimeError):
    """The console refused the exchange; ``error`` is the RFC 6749 / 8693 error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description = error, description


class TokenExchanger:
    """Exchanges tokens this MCP server received for tokens bound to other MCP servers."""

    def __init__(
        self,
        console_url: str,
        client_id: str,
        client_secret: str,
        *,
        metadata: ConsoleMetadata | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.metadata = metadata or discover_console(console_url)
        if not self.metadata.token_endpoint:
            raise ConsoleUnavailable("The console's metadata names no token endpoint.")
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self._timeout = timeout

    async def exchange(self, subject_token: str, resource: str, scope: str | None = None) -> ExchangedToken:
        """A token bound to the MCP server ``resource`` for ``subject_token``'s human and agent.

        ``scope``: the space-separated scopes wanted (None: all the console allows). Raises
        ``TokenExchangeRefused`` when the console says no, ``ConsoleUnavailable`` when it cannot
        be asked.
        """
        data = {
            "grant_type": GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
        }
        if scope:
            data["scope"] = scope
        try:
            async with httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                response = await client.post(self.metadata.token_endpoint, data=data, auth=self._auth)
            answer = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise ConsoleUnavailable(f"Token exchange failed: {exc!r}") from exc
        if response.status_code != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            answer = answer if isinstance(answer, dict) else {}
            raise TokenExchangeRefused(
                str(answer.get("error", f"http_{response.status_code}")),
                str(answer.get("error_description", "")),
            )
        try:
            expires_in = int(answer.get("expires_in", 0))
        except (TypeError, ValueError) as exc:
            raise ConsoleUnavailable(f"Token exchange answered a malformed expires_in: {exc!r}") from exc
        return ExchangedToken(answer["access_token"], expires_in, str(answer.get("scope", "")))

    async def exchange_current_token(self, resource: str, scope: str | None = None) -> ExchangedToken:
        """``exchange`` the token of the MCP request being served (inside a tool)."""
        current = get_access_token()
        if current is None:
            raise TokenExchangeRefused("invalid_request", "No authenticated request is being served.")
        return await self.exchange(current.token, resource, scope)
