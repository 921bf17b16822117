"""The one recording entry point: every door records what happened through ``record``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from audit.middleware import current, metadata_of
from audit.models import AuditEvent


def record(
    event_type: str,
    *,
    outcome: str,
    reason: str = "",
    actor=None,
    human=None,
    agent=None,
    actors: list[dict[str, str]] | None = None,
    server=None,
    tool: str = "",
    action: str = "",
    delegation=None,
    token=None,
    request: HttpRequest | None = None,
    detail: dict[str, Any] | None = None,
    correlation_id: str = "",
    token_checksum: str = "",
) -> AuditEvent:
    """Append one audit event. Objects are copied into plain columns so the trail outlives them.

    ``actors`` is the chain of actors, outermost first; it defaults to the agent alone. ``token``
    is an access or refresh token: only its id and checksum are kept; ``token_checksum`` alone
    links an event to a token whose row is gone. Request metadata comes from
    ``request``, else from the request being served (audit.middleware), so events of one request
    share a correlation id; ``correlation_id`` overrides it (e.g. an id an MCP server reported).
    """
    event = AuditEvent(
        event_type=event_type,
        outcome=outcome,
        reason=reason,
        tool=tool,
        action=action,
        detail=detail or {},
        token_checksum=token_checksum,
    )
    if actor is not None:
        event.actor_id, event.actor_username = actor.pk, actor.get_username()
    if human is not None:
        event.human_id, event.human_username = human.pk, human.get_username()
    if agent is not None:
        event.agent_client_id, event.agent_name = agent.client_id, agent.name
    if actors is not None:
        event.actors = actors
    elif agent is not None:
        event.actors = [{"type": "agent", "id": agent.client_id}]
    if server is not None:
        event.server_name, event.server_resource = server.name, server.resource
    if delegation is not None:
        event.delegation_id = delegation.pk
    if token is not None:
        event.token_id, event.token_checksum = token.pk, token.token_checksum or ""
    metadata = metadata_of(request) if request is not None else current.get()
    if metadata is not None:
        event.client_ip, event.user_agent = metadata.client_ip, metadata.user_agent
        event.correlation_id = metadata.correlation_id
    if correlation_id:
        event.correlation_id = correlation_id[:64]
    event.save()
    return event
