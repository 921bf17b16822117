"""Tokens as the other doors see them: by DOT's checksum, never by value.

Introspection finds the token an MCP server presents; the audit event API links a server's
report to the token, its delegation and its human, even once the token row is gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from oauth2_provider.models import set_token_value
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import generate_token

from policies.models import AccessToken, Agent, Delegation, ExchangePolicy, McpServer


def token_checksum(raw_token: str) -> str:
    """DOT's ``token_checksum`` of a bearer token: the only form in which the console keeps it."""
    return hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).hexdigest()


def token_lifetime(agent: Agent) -> int:
    """Seconds an access token of ``agent`` lives: its own setting, else the console's."""
    return agent.access_token_lifetime or oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS


def issue_access_token(
    agent: Agent,
    human: AbstractBaseUser,
    delegation: Delegation | None,
    scopes: Iterable[str],
    expires: datetime,
    *,
    server: McpServer,
    parent: AccessToken | None = None,
    exchange_policy: ExchangePolicy | None = None,
) -> tuple[str, AccessToken]:
    """A new access token of ``agent`` for ``human``, bound (RFC 8707) to ``server``, for the doors
    that mint tokens outside DOT's own grants (ID-JAG, token exchange, tool discovery).

    Returns the bearer value, given out once, and the row, which keeps only its checksum (as DOT
    keeps the tokens it mints).
    """
    raw = generate_token()  # oauthlib's generator, as DOT's own access tokens
    token = AccessToken(
        user=human,
        application=agent,
        delegation=delegation,
        scope=" ".join(sorted(scopes)),
        resource=[server.resource],
        expires=expires,
        parent=parent,
        exchange_policy=exchange_policy,
    )
    set_token_value(token, raw)
    token.save()
    return raw, token


def access_token_by_value(raw_token: str) -> AccessToken | None:
    return (
        AccessToken.objects.select_related("application", "delegation__human")
        .filter(token_checksum=token_checksum(raw_token))
        .first()
    )


def exchange_actors(token: AccessToken) -> list[McpServer]:
    """The MCP servers that exchanged their way to ``token`` (RFC 8693), the last one first.

    A token exchanged by server A (from the agent's token for A) was made by A; exchanged again
    by B, by B then A. Empty for a token from the agent's own OAuth flow.
    """
    if hasattr(token, "_exchange_actors"):  # introspection asks for act and actors in one go
        return token._exchange_actors
    servers: list[McpServer] = []
    ancestor = token
    while ancestor.parent_id is not None:
        ancestor = AccessToken.objects.select_related("delegation__server").get(pk=ancestor.parent_id)
        servers.append(ancestor.delegation.server)
    token._exchange_actors = servers
    return servers


def act_claim(token: AccessToken) -> dict[str, Any]:
    """The RFC 8693 ``act`` claim of a token: who acts for its human, current actor outermost.

    The agent for a token of its own; for an exchanged token, the MCP server that exchanged it
    (by its resource URI, which its credential rotation leaves unchanged), with the prior actors
    nested inside (RFC 8693 §4.1), down to the agent.
    """
    claim: dict[str, Any] = {"sub": token.application.client_id}
    for server in reversed(exchange_actors(token)):
        claim = {"sub": server.resource, "act": claim}
    return claim


def token_actors(token: AccessToken) -> list[dict[str, str]]:
    """The chain of actors behind a token, outermost (current) first, as audit events record it:
    the servers that exchanged it, the last one first, then the agent (see docs/AUDIT.md)."""
    servers = [{"type": "server", "id": server.name} for server in exchange_actors(token)]
    return [*servers, {"type": "agent", "id": token.application.client_id}]


@dataclass(frozen=True)
class TokenLink:
    """What a token leads to: the delegation, its human and agent (None where the row is gone)."""

    delegation: Delegation | None
    human: Any
    agent: Agent | None
    token: AccessToken | None


def server_token_links(server: McpServer, checksums: set[str]) -> dict[str, TokenLink]:
    """The live access tokens bound to ``server`` among ``checksums``, by checksum."""
    return {
        token.token_checksum: TokenLink(token.delegation, token.delegation.human, token.application, token)
        for token in AccessToken.objects.select_related("application", "delegation__human").filter(
            token_checksum__in=checksums, delegation__server=server
        )
    }


def link_from_record(delegation_id: int | None, human_id: int | None, agent_client_id: str) -> TokenLink:
    """The link of a token whose row is gone, from the ids its minting was recorded with."""
    delegation = Delegation.objects.select_related("human", "agent").filter(pk=delegation_id).first()
    if delegation is not None:
        return TokenLink(delegation, delegation.human, delegation.agent, None)
    return TokenLink(
        None,
        get_user_model().objects.filter(pk=human_id).first(),
        Agent.objects.filter(client_id=agent_client_id).first(),
        None,
    )
