"""What must hold in the database whatever requests came in, and a fingerprint of the console's
state to show that a refused request changed nothing."""

from __future__ import annotations

from django.db import connection
from oauth2_provider.settings import oauth2_settings

from audit.chain import seal_pending_events, verify_chain
from audit.models import AuditEvent
from policies.discovery import CONSOLE_SOURCE
from policies.models import AccessToken, Delegation, RefreshToken, scopes_of

ENDED = (Delegation.Status.REVOKED, Delegation.Status.DENIED)

# Tables a refused request may still append to or touch: the audit trail (a refusal is an event),
# its seals, django-auditlog's diffs, sessions and Celery results. Everything else is the console's
# state, which only a request that succeeded may change.
NOT_STATE = ("audit_", "auditlog_", "django_session", "django_celery", "django_admin_log")


def broken_invariants() -> list[str]:
    """Every violated invariant, as a sentence naming the rows; empty when all hold."""
    problems: list[str] = []
    tokens = AccessToken.objects.select_related("delegation", "application")
    for token in tokens:
        delegation = token.delegation
        if delegation is None:
            registration = token.scope == oauth2_settings.DCR_REGISTRATION_SCOPE
            if not (registration or token.application.registration_source == CONSOLE_SOURCE):
                problems.append(f"access token {token.pk} has no delegation")
            continue
        if not scopes_of(token.scope) <= delegation.scopes:
            problems.append(
                f"access token {token.pk} has scopes {token.scope!r} "
                f"beyond its delegation's {delegation.scope!r}"
            )
        if token.application_id != delegation.agent_id or token.user_id != delegation.human_id:
            problems.append(f"access token {token.pk} is not its delegation's agent's or human's")
        if delegation.status in ENDED:
            problems.append(f"access token {token.pk} lives on although delegation {delegation.pk} is ended")
    for refresh in RefreshToken.objects.select_related("delegation").filter(revoked__isnull=True):
        delegation = refresh.delegation
        if delegation is not None and delegation.status in ENDED:
            problems.append(
                f"refresh token {refresh.pk} is usable although delegation {delegation.pk} is ended"
            )
        if delegation is not None and refresh.application_id != delegation.agent_id:
            problems.append(f"refresh token {refresh.pk} is not its delegation's agent's")
    problems += _approval_problems()
    seal_pending_events()
    chain = verify_chain()
    if not chain.ok:
        problems.append(f"audit chain broken: {chain.message}")
    return problems


def _approval_problems() -> list[str]:
    problems = []
    needed_approval = {
        event.delegation_id
        for event in AuditEvent.objects.filter(event_type="consent.granted", delegation_id__isnull=False)
        if event.detail.get("needs_approval")
    }
    for delegation in Delegation.objects.filter(status=Delegation.Status.APPROVED):
        if delegation.pk in needed_approval and delegation.approved_by_id is None:
            problems.append(f"delegation {delegation.pk} needed an approver and is approved without one")
        if delegation.approved_by_id is not None and delegation.decided is None:
            problems.append(f"delegation {delegation.pk} has an approver but no decision time")
    return problems


def state_tables() -> list[str]:
    return sorted(name for name in connection.introspection.table_names() if not name.startswith(NOT_STATE))


def state_fingerprint(tables: list[str]) -> dict[str, str]:
    """A digest of every row of ``tables``, in one query (PostgreSQL)."""
    parts = [
        f"SELECT '{table}', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
        for table in tables
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts))
        return dict(cursor.fetchall())


def changed_tables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(table for table in before if before[table] != after.get(table))
