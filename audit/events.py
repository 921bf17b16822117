"""The one recording entry point: every door records what happened through ``record``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from audit.models import AuditEvent


def record(
    event_type: str,
    *,
    outcome: str,
    reason: str = "",
    actor=None,
    human=None,
    agent=None,
    server=None,
    tool: str = "",
    action: str = "",
    delegation=None,
    token=None,
    request: HttpRequest | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Objects are copied into plain columns so the trail outlives them."""
    event = AuditEvent(
        event_type=event_type,
        outcome=outcome,
        reason=reason,
        tool=tool,
        action=action,
        detail=detail or {},
    )
    if actor is not None:
        event.actor_id, event.actor_username = actor.pk, actor.get_username()
    if human is not None:
        event.human_id, event.human_username = human.pk, human.get_username()
    if agent is not None:
        event.agent_client_id, event.agent_name = agent.client_id, agent.name
    if server is not None:
        event.server_name, event.server_resource = server.name, server.resource
    if delegation is not None:
        event.delegation_id = delegation.pk
    if token is not None:
        event.token_id = token.pk
    if request is not None:
        event.client_ip = request.META.get("REMOTE_ADDR") or None
        event.user_agent = request.META.get("HTTP_USER_AGENT", "")[:300]
    event.save()
    return event
