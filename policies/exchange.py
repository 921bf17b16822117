"""
Token exchange between MCP servers (RFC 8693, delegation semantics).

An MCP server A holding an agent's token bound to itself exchanges it for a token bound to
another MCP server B, so that a tool of A can call a tool of B for the same human and agent.
``decide`` says whether and with which scopes (the subject token's whole chain usable, a hop
policy A → B, the depth limit, the human's own delegation on B); this module finds the
delegation, mints the token and records the exchange.

The new token is an ordinary access token of the agent for the human, bound to the human's
delegation on B, with a link to the subject token (its parent) and to the hop policy: ``sub``
stays the human, ``act`` names A then the agent. It never outlives the subject token and gets
no refresh token (RFC 8693 §2.2.1 leaves that to the server): when it expires, A exchanges again
and the policy is asked again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.events import record
from policies.decisions import Decision, Reason, decide, exchange_depth
from policies.models import AccessToken, Delegation, McpServer
from policies.tokens import issue_access_token, token_actors, token_lifetime


@dataclass(frozen=True)
class ExchangedToken:
    token: AccessToken
    value: str  # the bearer token, returned once and never stored

    @property
    def expires_in(self) -> int:
        return max(0, int((self.token.expires - timezone.now()).total_seconds()))


def exchange_token(
    *,
    subject: AccessToken,
    actor: McpServer,
    target: McpServer,
    scopes: Iterable[str] | None,
    request: HttpRequest | None = None,
) -> tuple[Decision, ExchangedToken | None]:
    """Exchange ``subject`` (presented by ``actor``) for a token bound to ``target``.

    ``scopes``: those asked for, or None for all the exchange may carry. Returns the decision and,
    when allowed, the new token. Either way the exchange is recorded (``token.exchanged``).
    """
    with transaction.atomic():
        # The subject token's row is locked: a revocation deleting it at this moment waits, then
        # deletes the new token with it (``AccessToken.parent`` cascades).
        still_there = bool(
            list(AccessToken.objects.select_for_update().filter(pk=subject.pk).values_list("pk"))
        )
        agent = subject.application
        human = subject.delegation.human if subject.delegation else subject.user
        delegation = (
            Delegation.objects.select_related("human")
            .filter(human=human, agent=agent, server=target, status=Delegation.Status.APPROVED)
            .first()
        )
        if not still_there:
            decision = Decision.deny(Reason.REVOKED)
        else:
            decision = decide(
                agent=agent, server=target, token=subject, actor=actor, delegation=delegation, scopes=scopes
            )
        exchanged = _mint(subject, target, delegation, decision) if decision.allowed else None
        record(
            "token.exchanged",
            outcome="allow" if decision.allowed else "deny",
            reason=decision.reason,
            human=human,
            agent=agent,
            # The chain the new token carries (or would have carried): the actor, then the
            # subject token's own actors.
            actors=[{"type": "server", "id": actor.name}, *token_actors(subject)],
            server=target,
            delegation=delegation if decision.allowed else None,
            token=exchanged.token if exchanged else None,
            request=request,
            detail={
                "actor": actor.name,
                "subject_token_id": subject.pk,
                "requested": sorted(scopes) if scopes is not None else None,
                "scope": " ".join(sorted(decision.scopes)),
                "depth": exchange_depth(subject) + 1,
            },
        )
    return decision, exchanged


def _mint(
    subject: AccessToken, target: McpServer, delegation: Delegation, decision: Decision
) -> ExchangedToken:
    value, token = issue_access_token(
        subject.application,
        delegation.human,
        delegation,
        decision.scopes,
        _expiry(subject, delegation, token_lifetime(subject.application)),
        server=target,
        parent=subject,
        exchange_policy=decision.hop,
    )
    return ExchangedToken(token, value)


def _expiry(subject: AccessToken, delegation: Delegation, lifetime: int) -> datetime:
    """Never beyond the subject token nor the delegation it hangs off (nor, by induction, any
    token or delegation further up): an exchange cannot extend a chain's life, and a token whose
    chain ran out of time is past its own ``exp`` too (introspection caches answers until then)."""
    limits = [timezone.now() + timedelta(seconds=lifetime), subject.expires]
    limits += [d.expires for d in (subject.delegation, delegation) if d.expires is not None]
    return min(limits)
