"""Counts over the audit trail for the console's dashboard (read-only queries on AuditEvent)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.models import AuditEvent

# What the dashboard calls "tokens issued" and "calls denied".
TOKEN_EVENTS = ("token.issued", "token.refreshed")
CALL_EVENTS = ("tool_call.decision", "introspection")


def daily_counts(
    event_types: Iterable[str], outcome: str | None = None, days: int = 14
) -> list[tuple[datetime.date, int]]:
    """Events of ``event_types`` per UTC day over the last ``days`` days, oldest first, zero days included."""
    today = timezone.now().date()
    first = today - datetime.timedelta(days=days - 1)
    # A plain range on `occurred` (not __date, which casts the column) lets PostgreSQL skip the
    # monthly partitions outside it.
    since = datetime.datetime.combine(first, datetime.time.min, tzinfo=datetime.UTC)
    events = AuditEvent.objects.filter(event_type__in=list(event_types), occurred__gte=since)
    if outcome is not None:
        events = events.filter(outcome=outcome)
    per_day = dict(
        events.annotate(day=TruncDate("occurred"))
        .order_by()
        .values_list("day")
        .annotate(count=Count("id"))
        .values_list("day", "count")
    )
    return [(day, per_day.get(day, 0)) for day in (first + datetime.timedelta(n) for n in range(days))]


def recent_denials(limit: int = 10) -> list[AuditEvent]:
    """The latest denied events, with who, which agent, which server and tool, and why."""
    # By time, not id: the (outcome, occurred) index answers it from the newest partitions.
    return list(AuditEvent.objects.filter(outcome=AuditEvent.Outcome.DENY).order_by("-occurred")[:limit])
