"""
The policy decision: one function answers every "may this happen?".

Consent (may this human delegate these scopes to this agent on this server?), the token
endpoint (may this delegation still mint tokens?) and introspection (may this token be used at
this server, for this tool action?) all ask ``decide``; no door carries rules of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
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
    ExchangePolicy,
    McpServer,
    ToolAction,
    scopes_of,
)
from policies.tokens import token_ancestors


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
    # Token exchange (RFC 8693): no hop policy from the actor to the target, a chain longer than
    # TOKEN_EXCHANGE_MAX_DEPTH, an MCP server up the chain deactivated.
    EXCHANGE_NOT_ALLOWED = "exchange_not_allowed"
    CHAIN_TOO_DEEP = "chain_too_deep"
    ACTOR_INACTIVE = "actor_inactive"
    # The subject token is unknown, bound to another server or no longer usable; why is kept in
    # ``Decision.cause`` for the audit trail only, never told to the MCP server (no oracle about
    # tokens bound elsewhere).
    SUBJECT_UNUSABLE = "subject_unusable"
    UNKNOWN_TOKEN = "unknown_token"


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
    # Token exchange only: the hop policy that allows it; why the subject token is unusable.
    hop: ExchangePolicy | None = None
    cause: str = ""
    # Token use only: when this answer runs out by itself, the earliest expiry of the token, its
    # delegation and every token and delegation up its exchange chain (a cache keeps it until then).
    valid_until: datetime | None = None

    @classmethod
    def deny(cls, reason: str, cause: str = "") -> Decision:
        return cls(False, reason, cause=cause)


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


def _chain_refusal(token: AccessToken) -> str | None:
    """Why a token made by token exchange is no longer usable, or None.

    It lives only while the hop that made it is still allowed and the subject token it came from
    is still usable at its own server, and so on up to the agent's token: revoking the root
    delegation, the agent, any token of the chain, deactivating a server of the chain or removing
    a hop ends every token below. Asked at every use, not only at the exchange, so a re-exchanged
    token cannot outlive what it came from (keycloak#52691).
    """
    ancestors = token_ancestors(token)  # the whole chain in one query, reused up the recursion
    parent = ancestors[0] if ancestors else None
    hop = token.exchange_policy
    if parent is None or hop is None or parent.delegation is None or parent.application is None:
        return Reason.REVOKED  # deleting either deletes this token too; a stale read gets here
    if (hop.source_id, hop.target_id) != (parent.delegation.server_id, token.delegation.server_id):
        return Reason.EXCHANGE_NOT_ALLOWED
    upstream = decide(agent=parent.application, server=parent.delegation.server, token=parent)
    if upstream.allowed:
        return None
    return Reason.ACTOR_INACTIVE if upstream.reason == Reason.SERVER_INACTIVE else upstream.reason


def _exchange_terms(
    agent: Agent | None,
    actor: McpServer,
    target: McpServer,
    subject: AccessToken | None,
    delegation: Delegation | None,
    requested: Iterable[str] | None,
) -> Decision:
    """What a token exchanged by ``actor`` for ``target`` may carry: the requested scopes within
    what the human's own delegation on the target allows and within the hop policy, never wider.

    The hop is asked first and every refusal about the subject token is the same one
    (``SUBJECT_UNUSABLE``, the detail in ``cause``), so an MCP server learns nothing about tokens
    bound elsewhere. ``subject`` None: no such token (or revoked meanwhile).
    """
    # No hop from a server to itself (a database check): a self-exchange is refused here too.
    hop = ExchangePolicy.objects.filter(source=actor, target=target).first()
    if hop is None:
        return Decision.deny(Reason.EXCHANGE_NOT_ALLOWED)
    if not target.active:
        return Decision.deny(Reason.SERVER_INACTIVE)
    if subject is None or agent is None:
        return Decision.deny(Reason.SUBJECT_UNUSABLE, Reason.UNKNOWN_TOKEN)
    if subject.delegation_id is None:  # the console's discovery token: never exchanged
        return Decision.deny(Reason.SUBJECT_UNUSABLE, Reason.TOOL_DISCOVERY)
    if subject.delegation.server_id != actor.pk:
        return Decision.deny(Reason.SUBJECT_UNUSABLE, Reason.WRONG_AUDIENCE)
    # Live, and its whole chain still usable.
    upstream = decide(agent=agent, server=actor, token=subject)
    if not upstream.allowed:
        return Decision.deny(Reason.SUBJECT_UNUSABLE, upstream.reason)
    if len(token_ancestors(subject)) + 1 > settings.TOKEN_EXCHANGE_MAX_DEPTH:
        return Decision.deny(Reason.CHAIN_TOO_DEEP)
    # The human stays in the chain: the agent reaches the target only through her own delegation
    # (the caller looks it up for the subject's human and agent).
    if delegation is None:
        return Decision.deny(Reason.NO_DELEGATION)
    on_target = decide(agent=agent, server=target, delegation=delegation)
    if not on_target.allowed:
        return Decision.deny(on_target.reason)
    usable = on_target.scopes & hop.scope_set
    if requested is not None:
        usable &= set(requested)
    if not usable:
        return Decision.deny(Reason.NO_USABLE_SCOPE)
    return Decision(True, Reason.OK, frozenset(usable), hop=hop)


def decide(
    *,
    agent: Agent | None,
    server: McpServer,
    human: AbstractBaseUser | None = None,
    scopes: Iterable[str] | None = None,
    delegation: Delegation | None = None,
    token: AccessToken | None = None,
    tool_call: str | None = None,
    actor: McpServer | None = None,
) -> Decision:
    """Decide whether ``agent`` may act at ``server``.

    - consent: ``human`` and the requested ``scopes``; allowed with the grantable subset, which
      says which scopes need an approver and how long the delegation may live.
    - token issuance: the ``delegation`` the new token hangs off.
    - token use: the ``token`` (its delegation is checked too) and optionally the
      ``tool_call`` scope (``tool:action``) about to run. A token without a delegation is usable
      only as the console's discovery token (``policies.discovery``). A token made by token
      exchange is usable only while its whole chain is (``_chain_refusal``).
    - token exchange (RFC 8693): the subject ``token``, the ``actor`` (the MCP server presenting
      it), the target ``server``, the human's ``delegation`` there (None if she has none) and the
      requested ``scopes`` (None: all that may be had); allowed with the new token's scopes.
      ``token`` and ``agent`` are None when the presented subject token is unknown.

    Policies and the agent's ceiling are read afresh each time: narrowing either takes effect at
    the next token request or introspection. A token-use decision says until when it holds
    (``valid_until``) unless something changes.
    """
    if actor is not None:
        return _exchange_terms(agent, actor, server, token, delegation, scopes)
    if agent is None:
        raise ValueError(
            "decide() needs the agent; only a token exchange names none (its subject is unknown)"
        )
    decision = _decision(agent, server, human, scopes, delegation, token, tool_call)
    if token is None:
        return decision
    chain = [token, *token_ancestors(token)]
    expiries = [t.expires for t in chain] + [t.delegation.expires for t in chain if t.delegation]
    return replace(decision, valid_until=min(e for e in expiries if e is not None))


def _decision(
    agent: Agent,
    server: McpServer,
    human: AbstractBaseUser | None,
    scopes: Iterable[str] | None,
    delegation: Delegation | None,
    token: AccessToken | None,
    tool_call: str | None,
) -> Decision:
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
        if token.parent_id is not None:
            refusal = _chain_refusal(token)
            if refusal is not None:
                return Decision.deny(refusal)

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
            if token.exchange_policy_id is not None:
                usable &= token.exchange_policy.scope_set  # a narrowed hop narrows its tokens at once
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
