"""Celery tasks of the policies app: telling approvers, and expiring delegations (beat)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from policies.approval import approver_emails, expire_delegations
from policies.models import Delegation


@shared_task
def notify_approvers(delegation_id: int) -> int:
    """Email the approvers that a delegation waits for them; returns how many were sent."""
    delegation = (
        Delegation.objects.select_related("human", "agent", "server")
        .filter(pk=delegation_id, status=Delegation.Status.PENDING)
        .first()
    )
    recipients = approver_emails()
    if delegation is None or not recipients:
        return 0
    agent = delegation.agent.name or delegation.agent.client_id
    link = settings.ISSUER + reverse("admin:policies_delegation_decide_page", args=[delegation.pk])
    body = (
        f"{delegation.human.get_username()} asks to let the agent {agent}"
        f" act on {delegation.server.name} with: {', '.join(sorted(delegation.scopes))}.\n\n"
        f"Approve or deny it in the console: {link}\n"
    )
    return send_mail(
        f"Delegation waiting for approval: {agent}",
        body,
        None,
        recipients,
    )


@shared_task
def expire_delegations_task() -> int:
    return expire_delegations()
