"""Tokens as the other doors see them: by DOT's checksum, never by value.

Introspection finds the token an MCP server presents; the audit event API links a server's
report to the token, its delegation and its human, even once the token row is gone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from policies.models import AccessToken, Agent, Delegation, McpServer


def token_checksum(raw_token: str) -> str:
    """DOT's ``token_checksum`` of a bearer token: the only form in which the console keeps it."""
    return hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).hexdigest()


def access_token_by_value(raw_token: str) -> AccessToken | None:
    return (
        AccessToken.objects.select_related("application", "delegation__human")
        .filter(token_checksum=token_checksum(raw_token))
        .first()
    )


def act_claim(token: AccessToken) -> dict[str, Any]:
    """The RFC 8693 ``act`` claim of a token: who acts for its human (the agent)."""
    return {"sub": token.application.client_id}


def token_actors(token: AccessToken) -> list[dict[str, str]]:
    """The chain of actors behind a token, outermost first, as audit events record it."""
    return [{"type": "agent", "id": token.application.client_id}]


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
