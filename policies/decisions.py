"""
The policy decision: one function answers every "may this happen?".

Consent (may this human delegate these scopes to this agent on this server?), the token
endpoint (may this delegation still mint tokens?) and introspection (may this token be used at
this server, for this tool action?) all ask ``decide``; no door carries rules of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from policies.discovery import is_console_agent
from policies.models import (
    RISK_ORDER,
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    McpServer,
    ToolAction,
    scopes_of,
)


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
    ABOVE_CEILING = "scope_above_agent_ceiling"
    SCOPE_MISSING = "scope_missing"
    NO_USABLE_SCOPE = "no_usable_scope"
    UNKNOWN_TOOL = "unknown_tool"
    TOOL_DISCOVERY = "tool_discovery"


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
    # Consent only: the granted scopes that need an approver, the longest the delegation may live
    # (seconds, None: no limit), and why each refused scope was refused.
    needs_approval: frozenset[str] = field(default_factory=frozenset)
    lifetime: int | None = None
    refused: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls(False, reason)


def applicable_policies(human: AbstractBaseUser, agent: Agent | None) -> QuerySet[DelegationPolicy]:
    """Policies of the human's groups that cover ``agent`` (those naming no agent cover every one).

    Without an agent: the policies that name no agent, i.e. what the human may delegate to any agent.
    """
    policies = DelegationPolicy.objects.filter(group__user=human)
    if agent is None:
        return policies.filter(agents__isnull=True)
    return policies.filter(Q(agents=agent) | Q(agents__isnull=True))


def _within_ceiling(actions: QuerySet[ToolAction], agent: Agent | None) -> QuerySet[ToolAction]:
    if agent is not None and agent.has_scope_ceiling:
        return actions.filter(ceiling_of=agent)
    return actions


def delegable_scopes(human: AbstractBaseUser, server: McpServer, agent: Agent | None = None) -> set[str]:
    """Scopes of ``server`` that the groups of ``human`` may delegate to ``agent``, within its ceiling."""
    actions = ToolAction.objects.filter(
        tool__server=server, delegable_by__in=applicable_policies(human, agent).values("pk")
    )
    pairs = _within_ceiling(actions, agent).order_by().values_list("tool__name", "name").distinct()
    return {f"{tool}:{action}" for tool, action in pairs}


def _consent_terms(human: AbstractBaseUser, agent: Agent, server: McpServer, requested: set[str]) -> Decision:
    """What the policies let ``human`` grant ``agent`` of ``requested``: the strictest policy wins."""
    policies = {
        p.pk: p
        for p in applicable_policies(human, agent)
        .distinct()
        .only("pk", "approval_risk", "max_delegation_lifetime")
    }
    grants = (
        DelegationPolicy.may_delegate.through.objects.filter(
            delegationpolicy_id__in=policies, toolaction__tool__server=server
        )
        .order_by()
        .values_list("delegationpolicy_id", "toolaction_id", "toolaction__tool__name", "toolaction__name")
    )
    explicit = set(
        DelegationPolicy.approval_required.through.objects.filter(
            delegationpolicy_id__in=policies, toolaction__tool__server=server
        ).values_list("delegationpolicy_id", "toolaction_id")
    )
    risks = dict(ToolAction.objects.filter(tool__server=server).values_list("pk", "tool__risk"))
    granted_by: dict[str, list[tuple[DelegationPolicy, int]]] = {}
    for policy_id, action_id, tool, action in grants:
        scope = f"{tool}:{action}"
        if scope in requested:
            granted_by.setdefault(scope, []).append((policies[policy_id], action_id))
    ceiling = None
    if agent.has_scope_ceiling:
        pairs = agent.scope_ceiling.filter(tool__server=server).values_list("tool__name", "name")
        ceiling = {f"{tool}:{action}" for tool, action in pairs}
    refused = {}
    for scope in sorted(requested):
        if scope not in granted_by:
            refused[scope] = Reason.SCOPE_NOT_DELEGABLE
        elif ceiling is not None and scope not in ceiling:
            refused[scope] = Reason.ABOVE_CEILING
    grantable = frozenset(granted_by) - set(refused)
    needs_approval = frozenset(
        scope
        for scope in grantable
        if any(
            (policy.pk, action_id) in explicit
            or (policy.approval_risk and RISK_ORDER[risks[action_id]] >= RISK_ORDER[policy.approval_risk])
            for policy, action_id in granted_by[scope]
        )
    )
    lifetimes = [
        policy.max_delegation_lifetime
        for scope in grantable
        for policy, _ in granted_by[scope]
        if policy.max_delegation_lifetime is not None
    ]
    if not grantable:
        reasons = set(refused.values())
        reason = Reason.ABOVE_CEILING if reasons == {Reason.ABOVE_CEILING} else Reason.SCOPE_NOT_DELEGABLE
        return Decision(False, reason, refused=refused)
    return Decision(
        True,
        Reason.OK,
        grantable,
        needs_approval=needs_approval,
        lifetime=min(lifetimes) if lifetimes else None,
        refused=refused,
    )


def _discovery_decision(
    agent: Agent, server: McpServer, token: AccessToken, tool_call: str | None
) -> Decision:
    """A token without a delegation: only the console's discovery token, at its one server, to list
    tools (``policies.discovery``); never a tool call. Others (e.g. DOT's RFC 7592 registration
    tokens) are usable nowhere."""
    if not is_console_agent(agent) or token.application_id != agent.pk:
        return Decision.deny(Reason.NO_DELEGATION)
    if server.resource not in token.resource:
        return Decision.deny(Reason.WRONG_AUDIENCE)
    human = token.user
    if human is None or not human.is_active:
        return Decision.deny(Reason.HUMAN_INACTIVE)
    if tool_call is not None:
        return Decision.deny(Reason.SCOPE_MISSING)
    return Decision(True, Reason.TOOL_DISCOVERY)


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

    - consent: ``human`` and the requested ``scopes``; allowed with the grantable subset, which
      says which scopes need an approver and how long the delegation may live.
    - token issuance: the ``delegation`` the new token hangs off.
    - token use: the ``token`` (its delegation is checked too) and optionally the
      ``tool_call`` scope (``tool:action``) about to run. A token without a delegation is usable
      only as the console's discovery token (``policies.discovery``).

    Policies and the agent's ceiling are read afresh each time: narrowing either takes effect at
    the next token request or introspection.
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
            return _discovery_decision(agent, server, token, tool_call)

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
        # human delegate to this agent today.
        usable = delegation.scopes & delegable_scopes(human, server, agent)
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
    return _consent_terms(human, agent, server, set(scopes))
