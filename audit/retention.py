"""Retention: delete events older than AUDIT_RETENTION_DAYS, in batches, except under a legal hold.

Only events covered by a signed checkpoint are deleted: the horizon is the latest checkpoint
created before the cut-off (every event it covers is older still). What stays below the horizon
(held events) is counted and digested in an ``audit.retention`` event, signed with the checkpoint
key and itself chained, so ``audit.chain.verify_chain`` can start from the horizon's checkpoint and
still check them. Retention never deletes checkpoints nor ``audit.retention`` events, so the
horizon never moves back.

A run killed half-way (its worker died; the task is delivered again, audit.tasks) is finished by
the next one: batches already deleted stay deleted, the statement counts them too (positions are
contiguous, so what is gone below the horizon is known), and it is recorded and sealed in one
transaction, so a run never leaves two statements for one horizon.
"""

from __future__ import annotations

import operator
from datetime import datetime, timedelta
from functools import reduce

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.chain import (
    RETENTION_EVENT,
    kept_digest,
    kept_events,
    retention_horizon,
    retention_statement,
    seal_pending_events,
    try_advisory_lock,
)
from audit.events import record
from audit.models import AuditCheckpoint, AuditEvent, LegalHold

_RETENTION_LOCK = 0x6175646974_0DE1


def held() -> Q | None:
    """Events under an active legal hold; None when no hold is active."""
    conditions = []
    for hold in LegalHold.objects.filter(released__isnull=True):
        condition = Q(pk__isnull=False)  # a hold with no criteria holds everything
        if hold.human_id is not None:
            condition &= Q(human_id=hold.human_id)
        if hold.agent_client_id:
            condition &= Q(agent_client_id=hold.agent_client_id)
        if hold.server_name:
            condition &= Q(server_name=hold.server_name)
        if hold.since:
            condition &= Q(occurred__gte=hold.since)
        if hold.until:
            condition &= Q(occurred__lte=hold.until)
        conditions.append(condition)
    return reduce(operator.or_, conditions) if conditions else None


class RetentionBusy(Exception):
    """Another retention run holds the lock (or the session of a run whose worker died lingers)."""


def apply_retention(
    now: datetime | None = None, days: int | None = None, batch_size: int | None = None
) -> int:
    """Delete the expired, checkpointed, unheld events; return how many this run deleted.

    Raises RetentionBusy while another run holds the retention lock.
    """
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    batch_size = batch_size or settings.AUDIT_RETENTION_BATCH_SIZE
    cutoff = (now or timezone.now()) - timedelta(days=days)
    horizon = AuditCheckpoint.objects.filter(created__lt=cutoff).order_by("-chain_seq").first()
    if horizon is None:
        return 0
    with try_advisory_lock(_RETENTION_LOCK, session=True) as locked:
        if not locked:
            raise RetentionBusy
        # The statements are the horizon's record: deleting one could move the horizon back.
        expired = AuditEvent.objects.filter(chain_seq__lte=horizon.chain_seq, occurred__lt=cutoff).exclude(
            event_type=RETENTION_EVENT
        )
        holds = held()
        if holds is not None:
            expired = expired.exclude(holds)
        deleted = 0
        while batch := _delete_batch(expired, batch_size):
            deleted += batch
        previous, last_statement = retention_horizon()
        # Also when nothing was deleted now: an earlier run may have stopped before recording.
        if deleted or horizon.chain_seq > previous:
            # A longer retention period never moves the horizon back over what is already gone.
            through = max(horizon.chain_seq, previous)
            kept, digest = kept_digest(kept_events(through))
            # Every position up to `through` is kept or was deleted since the last statement (which
            # found `kept` of its own positions present): this run's deletions and those of a run
            # that died before recording.
            previous_kept = last_statement.detail["kept"] if last_statement else 0
            statement = retention_statement(
                through_seq=through,
                cutoff=cutoff.isoformat(),
                deleted=previous_kept + (through - previous) - kept,
                kept=kept,
                kept_digest=digest,
            )
            with transaction.atomic():
                record(RETENTION_EVENT, outcome="allow", detail=statement)
                # Chained at once: verify_chain trusts a statement only once it is sealed.
                seal_pending_events()
        return deleted


def _delete_batch(expired, batch_size: int) -> int:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The append-only trigger lets DELETE through only inside this transaction.
                cursor.execute("SET LOCAL audit.retention = 'on'")
        ids = list(expired.order_by("chain_seq").values_list("id", flat=True)[:batch_size])
        if not ids:
            return 0
        return AuditEvent.objects.filter(id__in=ids).delete()[0]
