"""The events table is partitioned by month on PostgreSQL, with indexes that match the search filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.events import record
from audit.models import AuditEvent
from audit.partitions import ensure_partitions, partitions
from audit.tasks import ensure_audit_partitions

pytestmark = pytest.mark.django_db


def partition_of(event_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM audit_auditevent WHERE id = %s", [event_id])
        return cursor.fetchone()[0]


def test_events_land_in_the_partition_of_their_month():
    event = record("tool_call.decision", outcome="allow")
    assert partition_of(event.id) == f"audit_auditevent_{event.occurred:%Y_%m}"


def insert_event(occurred: datetime, **columns) -> int:
    """Insert an event stamped ``occurred`` (``record`` stamps now; the table allows only INSERT)."""
    event = AuditEvent(event_type="tool_call.decision", outcome="allow", **columns)
    fields = [f for f in AuditEvent._meta.concrete_fields if f.name not in ("id", "occurred")]
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields]
    names, placeholders = ", ".join(f.column for f in fields), ", %s" * len(fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO audit_auditevent (occurred, {names}) VALUES (%s{placeholders}) RETURNING id",  # noqa: S608
            [occurred, *values],
        )
        return cursor.fetchone()[0]


def test_an_event_outside_every_monthly_partition_still_inserts_into_the_default():
    assert partition_of(insert_event(datetime(1999, 1, 1, tzinfo=UTC))) == "audit_auditevent_default"


def test_the_task_keeps_partitions_months_ahead_and_is_idempotent():
    ensure_audit_partitions.delay()
    now = timezone.now()
    for months in range(4):
        month = (now.replace(day=1) + timedelta(days=32 * months)).replace(day=1)
        assert f"audit_auditevent_{month:%Y_%m}" in partitions()
    far = datetime(2031, 5, 17, tzinfo=UTC)
    assert ensure_partitions(months_ahead=1, now=far) == [
        "audit_auditevent_2031_05",
        "audit_auditevent_2031_06",
    ]
    assert ensure_partitions(months_ahead=1, now=far) == []


def test_a_month_whose_rows_fell_into_the_default_partition_is_left_there():
    insert_event(datetime(2035, 3, 3, tzinfo=UTC))
    created = ensure_partitions(months_ahead=1, now=datetime(2035, 3, 1, tzinfo=UTC))
    assert created == ["audit_auditevent_2035_04"]


def plan(queryset) -> str:
    return queryset.explain()


def test_a_search_in_a_time_range_reads_only_that_months_partition():
    since = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    query = AuditEvent.objects.filter(
        occurred__gte=since, occurred__lt=since + timedelta(days=1), outcome="deny"
    )
    scanned = plan(query)
    assert f"audit_auditevent_{since:%Y_%m}" in scanned
    assert "audit_auditevent_default" not in scanned


@pytest.mark.parametrize(
    ("index", "columns"),
    [
        ("audit_human_time", "human_id, occurred"),
        ("audit_human_name_time", "human_username, occurred"),
        ("audit_agent_time", "agent_client_id, occurred"),
        ("audit_server_time", "server_name, occurred"),
        ("audit_outcome_time", "outcome, occurred"),
        ("audit_type_time", "event_type, occurred"),
        ("audit_tool_time", "tool, occurred"),
    ],
)
def test_every_search_filter_has_an_index_with_time_on_every_partition(index, columns):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [index])
        (definition,) = cursor.fetchone()
        assert f"({columns})" in definition
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [index])
        assert cursor.fetchone()[0] == len(partitions())


def test_the_database_primary_key_includes_the_partition_key():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'audit_auditevent_pkey'"
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, occurred)"
