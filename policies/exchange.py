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
from datetime import datetime, timedelta

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.events import record
from policies.decisions import Decision, decide
from policies.models import AccessToken, Delegation, McpServer
from policies.tokens import IssuedToken, issue_access_token, token_actors, token_ancestors, token_lifetime


def exchange_token(
    *,
    subject: AccessToken | None,
    actor: McpServer,
    target: McpServer,
    scopes: Iterable[str] | None,
    request: HttpRequest | None = None,
) -> tuple[Decision, IssuedToken | None]:
    """Exchange ``subject`` (presented by ``actor``; None: an unknown token) for a token bound to
    ``target``.

    ``scopes``: those asked for, or None for all the exchange may carry. Returns the decision and,
    when allowed, the new token. Either way the exchange is recorded (``token.exchanged``), with
    why the subject token was refused, which the MCP server is not told.
    """
    with transaction.atomic():
        # The subject token's row is locked until the new token is committed. Every revocation
        # (``policies.revocation.revoke_derived_tokens``) locks the rows it revokes before listing
        # the tokens derived from them: either it waits for this exchange and then ends the new
        # token too, or this exchange waits and finds the subject token gone.
        usable = subject
        if subject is not None and not AccessToken.objects.select_for_update().filter(pk=subject.pk).exists():
            usable = None
        agent = subject.application if subject else None
        human = (subject.delegation.human if subject.delegation else subject.user) if subject else None
        delegation = (
            Delegation.objects.select_related("human")
            .filter(human=human, agent=agent, server=target, status=Delegation.Status.APPROVED)
            .first()
            if usable is not None
            else None
        )
        decision = decide(
            agent=agent, server=target, token=usable, actor=actor, delegation=delegation, scopes=scopes
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
            actors=[{"type": "server", "id": actor.name}, *(token_actors(subject) if subject else [])],
            server=target,
            delegation=delegation if decision.allowed else None,
            token=exchanged.token if exchanged else None,
            request=request,
            detail={
                "actor": actor.name,
                "subject_token_id": subject.pk if subject else None,
                "subject_reason": decision.cause or None,
                "requested": sorted(scopes) if scopes is not None else None,
                "scope": " ".join(sorted(decision.scopes)),
                "depth": len(token_ancestors(subject)) + 1 if subject else None,
            },
        )
    return decision, exchanged


def _mint(subject: AccessToken, target: McpServer, delegation: Delegation, decision: Decision) -> IssuedToken:
    return issue_access_token(
        subject.application,
        delegation.human,
        delegation,
        decision.scopes,
        _expiry(subject, delegation, token_lifetime(subject.application)),
        server=target,
        parent=subject,
        exchange_policy=decision.hop,
    )


def _expiry(subject: AccessToken, delegation: Delegation, lifetime: int) -> datetime:
    """Never beyond the subject token nor the delegation it hangs off (nor, by induction, any
    token or delegation further up): an exchange cannot extend a chain's life, and a token whose
    chain ran out of time is past its own ``exp`` too (introspection caches answers until then)."""
    limits = [timezone.now() + timedelta(seconds=lifetime), subject.expires]
    limits += [d.expires for d in (subject.delegation, delegation) if d.expires is not None]
    return min(limits)
