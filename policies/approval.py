"""
Delegations that wait for an approver: approving, denying, expiring, and who is told.

A consent to a scope that needs an approver leaves a pending delegation beside any approved one
of the same human, agent and server; the approved one keeps working until the pending one is
approved, which then takes its place (and its tokens, cut down to the new scopes). A pending
request waits DELEGATION_APPROVAL_TIMEOUT_HOURS at most, then expires; a newer consent of the
same human to the same agent and server replaces it (see services.delegate).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audit.events import record
from console.roles import Role
from policies.decisions import decide
from policies.introspection import introspection_changed
from policies.models import AccessToken, Delegation, Grant, RefreshToken
from policies.revocation import end_delegations


class DelegationStateError(ValueError):
    """An approval or denial that cannot happen (not pending, or the policy no longer allows it)."""


def expiry_for(lifetime: int | None, now: datetime | None = None) -> datetime | None:
    return (now or timezone.now()) + timedelta(seconds=lifetime) if lifetime else None


def approval_timeout() -> timedelta:
    return timedelta(hours=settings.DELEGATION_APPROVAL_TIMEOUT_HOURS)


def approval_deadline(delegation: Delegation) -> datetime:
    """When a pending delegation expires if no approver has decided."""
    return delegation.created + approval_timeout()


def _pending(delegation: Delegation) -> Delegation:
    locked = Delegation.objects.select_for_update().select_related("human", "agent", "server")
    delegation = locked.get(pk=delegation.pk)
    if delegation.status != Delegation.Status.PENDING:
        raise DelegationStateError(f"This delegation is {delegation.status}, not pending.")
    # Past its deadline it only waits for the next expiry run; the human was told it expires.
    if approval_deadline(delegation) <= timezone.now():
        raise DelegationStateError("This request waited longer than an approver may take; it has expired.")
    return delegation


@transaction.atomic
def approve_delegation(delegation: Delegation, *, by: AbstractBaseUser, comment: str = "") -> Delegation:
    """Approve a pending delegation, within what the policy allows now; it replaces the approved one."""
    delegation = _pending(delegation)
    if by is not None and by.pk == delegation.human_id:
        # Four eyes: the approval exists because the human alone may not grant this.
        raise DelegationStateError("You cannot approve your own request: another approver must decide.")
    decision = decide(
        agent=delegation.agent, server=delegation.server, human=delegation.human, scopes=delegation.scopes
    )
    if not decision.allowed:
        raise DelegationStateError(f"The policy no longer allows this delegation ({decision.reason}).")
    now = timezone.now()
    previous = (
        Delegation.objects.select_for_update()
        .filter(
            human=delegation.human,
            agent=delegation.agent,
            server=delegation.server,
            status=Delegation.Status.APPROVED,
        )
        .first()
    )
    if previous is not None:
        # The agent's tokens carry on under the new delegation, cut down to its scopes at
        # introspection, as when a human consents again without needing an approver.
        for model in (AccessToken, RefreshToken, Grant):
            model.objects.filter(delegation=previous).update(delegation=delegation)
        introspection_changed()  # a bulk update sends no signal
        end_delegations(Delegation.objects.filter(pk=previous.pk), by=by, why="superseded")
    delegation.status = Delegation.Status.APPROVED
    delegation.scope = " ".join(sorted(decision.scopes))
    delegation.approved_by = by
    delegation.decided = now
    delegation.decision_comment = comment
    delegation.expires = expiry_for(decision.lifetime, now)
    delegation.save()
    record(
        "delegation.approved",
        outcome="allow",
        actor=by,
        human=delegation.human,
        agent=delegation.agent,
        server=delegation.server,
        delegation=delegation,
        detail={"scope": delegation.scope, "comment": comment},
    )
    return delegation


@transaction.atomic
def deny_delegation(delegation: Delegation, *, by: AbstractBaseUser, comment: str) -> Delegation:
    """Deny a pending delegation; the comment is shown to the human."""
    if not comment.strip():
        raise DelegationStateError("Say why the delegation is denied: the human sees the comment.")
    delegation = _pending(delegation)
    delegation.status = Delegation.Status.DENIED
    delegation.approved_by = by
    delegation.decided = timezone.now()
    delegation.decision_comment = comment
    delegation.save()
    record(
        "delegation.denied",
        outcome="deny",
        reason="approver",
        actor=by,
        human=delegation.human,
        agent=delegation.agent,
        server=delegation.server,
        delegation=delegation,
        detail={"scope": delegation.scope, "comment": comment},
    )
    return delegation


def expire_delegations(now: datetime | None = None) -> int:
    """End the approved delegations whose time is up (with their tokens), and the pending ones
    that no approver decided in time."""
    now = now or timezone.now()
    expired = Delegation.Status.EXPIRED
    lived = Delegation.objects.filter(status=Delegation.Status.APPROVED, expires__lte=now)
    count = end_delegations(lived, by=None, why="lifetime", status=expired)
    unanswered = Delegation.objects.filter(
        status=Delegation.Status.PENDING, created__lte=now - approval_timeout()
    )
    comment = f"No approver decided within {settings.DELEGATION_APPROVAL_TIMEOUT_HOURS:g} hours."
    return count + end_delegations(
        unanswered, by=None, why="approval_timeout", status=expired, comment=comment
    )


def approver_emails() -> list[str]:
    """Who is told about pending delegations: APPROVER_EMAILS if set, else the Approvers' emails."""
    if settings.APPROVER_EMAILS:
        return list(settings.APPROVER_EMAILS)
    users = (
        get_user_model().objects.filter(groups__name=Role.APPROVER.value, is_active=True).exclude(email="")
    )
    return sorted(set(users.values_list("email", flat=True)))
