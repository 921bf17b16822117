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
from django.db import connection
from django.db.models.expressions import RawSQL
from django.utils import timezone
from oauth2_provider.models import set_token_value
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import generate_token

from policies.models import AccessToken, Agent, Delegation, ExchangePolicy, McpServer


def token_checksum(raw_token: str) -> str:
    """DOT's ``token_checksum`` of a bearer token: the only form in which the console keeps it."""
    return hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: AccessToken
    value: str  # the bearer token, given out once and never stored

    @property
    def expires_in(self) -> int:
        return max(0, int((self.token.expires - timezone.now()).total_seconds()))


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
) -> IssuedToken:
    """A new access token of ``agent`` for ``human``, bound (RFC 8707) to ``server``, for the doors
    that mint tokens outside DOT's own grants (ID-JAG, token exchange, tool discovery).

    The row keeps only the bearer value's checksum (as DOT keeps the tokens it mints); the value
    is in the result, to be given out once.
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
    return IssuedToken(token, raw)


def access_token_by_value(raw_token: str) -> AccessToken | None:
    return (
        AccessToken.objects.select_related("application", "delegation__human", "exchange_policy")
        .filter(token_checksum=token_checksum(raw_token))
        .first()
    )


def token_ancestors(token: AccessToken) -> list[AccessToken]:
    """The tokens ``token`` was exchanged from (RFC 8693), its parent first, up to the agent's own
    token (empty for that one). Read in one query (a recursive CTE) and linked, so that walking
    ``parent`` and deciding each ancestor (``policies.decisions``) reads no row of the chain again.
    The walk stops at an ancestor that is gone (revoked meanwhile)."""
    if token.parent_id is None:
        return []
    if hasattr(token, "_ancestors"):
        return token._ancestors
    # Django's ORM has no recursive query; the only value interpolated is the model's table name.
    table = connection.ops.quote_name(AccessToken._meta.db_table)
    chain = RawSQL(  # noqa: S611
        f"WITH RECURSIVE chain(id, parent_id) AS (SELECT id, parent_id FROM {table} WHERE id = %s "  # noqa: S608
        f"UNION SELECT t.id, t.parent_id FROM {table} t JOIN chain ON t.id = chain.parent_id) "
        "SELECT id FROM chain",
        (token.parent_id,),
    )
    rows = AccessToken.objects.filter(pk__in=chain).select_related(
        "application", "exchange_policy", "delegation__server", "delegation__human"
    )
    by_pk = {row.pk: row for row in rows}
    ancestors: list[AccessToken] = []
    current = token
    while current.parent_id in by_pk:
        current.parent = by_pk[current.parent_id]  # Django keeps it: ``.parent`` reads nothing
        ancestors.append(current.parent)
        current = current.parent
    for depth, ancestor in enumerate(ancestors):
        ancestor._ancestors = ancestors[depth + 1 :]
    token._ancestors = ancestors
    return ancestors


def exchange_actors(token: AccessToken) -> list[McpServer]:
    """The MCP servers that exchanged their way to ``token`` (RFC 8693), the last one first.

    A token exchanged by server A (from the agent's token for A) was made by A; exchanged again
    by B, by B then A. Empty for a token from the agent's own OAuth flow.
    """
    return [ancestor.delegation.server for ancestor in token_ancestors(token)]


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
