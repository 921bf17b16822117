"""Monthly range partitions of the events table on PostgreSQL (created by migration 0004).

A beat task keeps partitions a few months ahead; the default partition catches anything else,
so an insert never fails. Search filters always carry a time range, which PostgreSQL uses to
skip whole months (partition pruning).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

TABLE = "audit_auditevent"


_PARTITIONS = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass ORDER BY 1"
_DEFAULT_HOLDS_ROWS = (
    "SELECT EXISTS (SELECT 1 FROM audit_auditevent_default WHERE occurred >= %s AND occurred < %s)"
)


def _add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{TABLE}_{month:%Y_%m}"


def ensure_partitions(months_ahead: int = 3, now: datetime | None = None) -> list[str]:
    """Create the monthly partitions from this month to ``months_ahead`` months ahead; return new names.

    A month whose rows already fell into the default partition is left there (attaching it would
    fail); such rows are still searched and chained, only not pruned.
    """
    if connection.vendor != "postgresql":
        return []
    now = now or timezone.now()
    this_month = now.astimezone(UTC).date().replace(day=1)
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        existing = set(partitions())
        for n in range(months_ahead + 1):
            month = _add_months(this_month, n)
            name = partition_name(month)
            if name in existing:
                continue
            start = datetime(month.year, month.month, 1, tzinfo=UTC)
            end = datetime(*_add_months(month, 1).timetuple()[:3], tzinfo=UTC)
            cursor.execute(_DEFAULT_HOLDS_ROWS, [start, end])
            if cursor.fetchone()[0]:
                log.warning("audit partition %s not created: its rows are in the default partition", name)
                continue
            cursor.execute(
                f'CREATE TABLE "{name}" PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)', [start, end]
            )
            created.append(name)
    return created


def partitions() -> list[str]:
    """The partitions of the events table, in name order (empty where the table is not partitioned)."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(_PARTITIONS, [TABLE])
        return [row[0] for row in cursor.fetchall()]
