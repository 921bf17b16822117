"""
The policy decision: one function answers every "may this happen?".

Consent (may this human delegate these scopes to this agent on this server?), the token
endpoint (may this delegation still mint tokens?) and introspection (may this token be used at
this server, for this tool action?) all ask ``decide``; no door carries rules of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from policies.models import AccessToken, Agent, Delegation, McpServer, ToolAction, scopes_of


class Reason:
    """Machine-readable reasons carried by decisions, introspection answers and audit events."""

    OK = "ok"
    AGENT_PENDING = "agent_pending"
    AGENT_SUSPENDED = "agent_suspended"
    SERVER_INACTIVE = "server_inactive"
    HUMAN_INACTIVE = "human_inactive"
    NO_DELEGATION = "no_delegation"
    DELEGATION_PENDING = "delegation_pending"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"
    WRONG_AUDIENCE = "wrong_audience"
    SCOPE_NOT_DELEGABLE = "scope_not_delegable"
    SCOPE_MISSING = "scope_missing"
    NO_USABLE_SCOPE = "no_usable_scope"
    UNKNOWN_TOOL = "unknown_tool"


_DELEGATION_STATUS_REASON = {
    Delegation.Status.PENDING: Reason.DELEGATION_PENDING,
    Delegation.Status.DENIED: Reason.DENIED,
    Delegation.Status.REVOKED: Reason.REVOKED,
    Delegation.Status.EXPIRED: Reason.EXPIRED,
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    # The scopes this decision covers: those the human may grant (consent) or those the token
    # may use right now (token use). Always within what was asked.
    scopes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls(False, reason)


def delegable_scopes(human: AbstractBaseUser, server: McpServer) -> set[str]:
    """Scopes of ``server`` that the groups of ``human`` may delegate."""
    pairs = (
        ToolAction.objects.filter(tool__server=server, delegable_by__group__user=human)
        .order_by()
        .values_list("tool__name", "name")
    )
    return {f"{tool}:{action}" for tool, action in pairs}


def decide(
    *,
    agent: Agent,
    server: McpServer,
    human: AbstractBaseUser | None = None,
    scopes: Iterable[str] | None = None,
    delegation: Delegation | None = None,
    token: AccessToken | None = None,
    tool_call: str | None = None,
) -> Decision:
    """Decide whether ``agent`` may act at ``server``.

    - consent: ``human`` and the requested ``scopes``; allowed with the delegable subset.
    - token issuance: the ``delegation`` the new token hangs off.
    - token use: the ``token`` (its delegation is checked too) and optionally the
      ``tool_call`` scope (``tool:action``) about to run.
    """
    if agent.status == Agent.Status.PENDING:
        return Decision.deny(Reason.AGENT_PENDING)
    if agent.status == Agent.Status.SUSPENDED:
        return Decision.deny(Reason.AGENT_SUSPENDED)
    if not server.active:
        return Decision.deny(Reason.SERVER_INACTIVE)

    if token is not None:
        if token.expires <= timezone.now():
            return Decision.deny(Reason.EXPIRED)
        delegation = token.delegation
        if delegation is None:
            return Decision.deny(Reason.NO_DELEGATION)

    if delegation is not None:
        if delegation.server_id != server.pk:
            return Decision.deny(Reason.WRONG_AUDIENCE)
        if delegation.agent_id != agent.pk:
            return Decision.deny(Reason.NO_DELEGATION)
        if delegation.status != Delegation.Status.APPROVED:
            return Decision.deny(_DELEGATION_STATUS_REASON[delegation.status])
        if delegation.expires is not None and delegation.expires <= timezone.now():
            return Decision.deny(Reason.EXPIRED)
        human = delegation.human

    if human is not None and not human.is_active:
        return Decision.deny(Reason.HUMAN_INACTIVE)

    if delegation is not None:
        # Neither a token nor a new one exceeds its delegation, nor what the policy lets the
        # human delegate today: narrowing either takes effect at the next introspection.
        usable = delegation.scopes & delegable_scopes(human, server)
        if token is not None:
            usable &= scopes_of(token.scope)
        if not usable:
            return Decision.deny(Reason.NO_USABLE_SCOPE)
        if tool_call is not None and tool_call not in usable:
            tool, _, action = tool_call.partition(":")
            known = ToolAction.objects.filter(tool__server=server, tool__name=tool, name=action).exists()
            return Decision(False, Reason.SCOPE_MISSING if known else Reason.UNKNOWN_TOOL, frozenset(usable))
        return Decision(True, Reason.OK, frozenset(usable))

    if human is None or scopes is None:
        raise ValueError("decide() needs a token, a delegation, or a human with requested scopes")
    requested = set(scopes)
    grantable = frozenset(requested & delegable_scopes(human, server))
    if not grantable:
        return Decision(False, Reason.SCOPE_NOT_DELEGABLE)
    return Decision(True, Reason.OK, grantable)
