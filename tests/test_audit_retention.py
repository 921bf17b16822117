"""Retention deletes expired, checkpointed events outside legal holds; the chain still verifies."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk, jws

from audit.chain import RETENTION_EVENT, seal_pending_events, verify_chain
from audit.events import record
from audit.models import AuditCheckpoint, AuditEvent, LegalHold
from audit.retention import apply_retention
from audit.tasks import apply_audit_retention
from tests.test_audit_partitions import insert_event


def old_event(days_ago: int, human_id: int, server: str = "calendar") -> int:
    return insert_event(
        timezone.now() - timedelta(days=days_ago),
        human_id=human_id,
        human_username=f"human{human_id}",
        server_name=server,
    )


def seal_as_of(days_ago: int) -> AuditCheckpoint:
    """Seal now, and date the checkpoint as if the sealer had run back then."""
    seal_pending_events()
    checkpoint = AuditCheckpoint.objects.order_by("-chain_seq").first()
    # Checkpoints are append-only in the database: only a superuser can backdate one.
    as_superuser(
        "UPDATE audit_auditcheckpoint SET created = %s WHERE id = %s",
        [timezone.now() - timedelta(days=days_ago), checkpoint.pk],
    )
    return checkpoint


def as_superuser(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")


def wait_for_retention_event(timeout: float = 60) -> AuditEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = AuditEvent.objects.filter(event_type="audit.retention").first()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError("the worker did not run retention")


def test_the_retention_task_on_a_real_worker_keeps_held_and_recent_events_and_the_chain_verifies(
    celery_worker, settings
):
    assert settings.AUDIT_RETENTION_DAYS == 365
    recorded_by_setup = AuditEvent.objects.count()  # e.g. the roles created after migrate
    expired = [old_event(400, human_id=1) for _ in range(4)]
    held = [old_event(400, human_id=2) for _ in range(3)]
    seal_as_of(399)
    LegalHold.objects.create(name="litigation 42", human_id=2)
    LegalHold.objects.create(name="closed case", human_id=1, released=timezone.now())
    recent = [record("tool_call.decision", outcome="allow").id for _ in range(3)]
    seal_pending_events()

    apply_audit_retention.delay()
    run = wait_for_retention_event()

    remaining = set(AuditEvent.objects.values_list("id", flat=True))
    assert remaining.isdisjoint(expired)
    assert remaining >= set(held) | set(recent)
    assert (run.detail["deleted"], run.detail["kept"]) == (4, len(held) + recorded_by_setup)
    seal_pending_events()
    result = verify_chain()
    assert (result.ok, result.events_checked) == (True, AuditEvent.objects.count()), result.message

    # A held event below the retention horizon is still protected: editing it is caught.
    as_superuser("UPDATE audit_auditevent SET outcome = 'deny' WHERE id = %s", [held[0]])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, run.id)


@pytest.mark.django_db
def test_events_not_yet_under_an_expired_checkpoint_are_kept():
    sealed_long_ago = [old_event(400, human_id=1) for _ in range(2)]
    seal_as_of(399)
    sealed_recently = [old_event(400, human_id=1) for _ in range(2)]
    seal_pending_events()  # old events, but their checkpoint is recent
    unsealed = old_event(400, human_id=1)

    assert apply_retention() == 2
    remaining = set(AuditEvent.objects.values_list("id", flat=True))
    assert remaining.isdisjoint(sealed_long_ago)
    assert remaining >= {*sealed_recently, unsealed}
    seal_pending_events()
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_hold_without_criteria_keeps_everything_and_a_time_bounded_hold_only_its_period():
    in_period = old_event(400, human_id=1)
    before_period = old_event(500, human_id=1)
    seal_as_of(399)
    everything = LegalHold.objects.create(name="freeze")
    assert apply_retention() == 0
    everything.released = timezone.now()
    everything.save()
    LegalHold.objects.create(name="Q3", since=timezone.now() - timedelta(days=450), server_name="calendar")

    assert apply_retention() == 1
    assert list(AuditEvent.objects.filter(event_type="tool_call.decision").values_list("id", flat=True)) == [
        in_period
    ]
    assert not AuditEvent.objects.filter(pk=before_period).exists()
    assert verify_chain().ok  # nothing sealed above the horizon yet
    seal_pending_events()
    assert verify_chain().ok


@pytest.mark.django_db
def test_nothing_is_deleted_before_any_checkpoint_is_old_enough():
    event_id = old_event(400, human_id=1)
    seal_pending_events()
    assert apply_retention() == 0
    assert AuditEvent.objects.filter(pk=event_id).exists()


@pytest.mark.django_db
def test_a_longer_retention_period_later_does_not_move_the_verified_horizon_back():
    held = old_event(400, human_id=2)
    seal_as_of(399)
    old_event(200, human_id=1)
    seal_as_of(199)
    hold = LegalHold.objects.create(name="case", human_id=2)
    assert apply_retention(days=100) == 1  # horizon: the second checkpoint; the held event stays
    hold.released = timezone.now()
    hold.save()

    assert apply_retention(days=300) == 1  # horizon: the first checkpoint only
    assert not AuditEvent.objects.filter(pk=held).exists()
    seal_pending_events()
    result = verify_chain()
    assert result.ok, result.message


@pytest.mark.django_db
def test_retention_never_deletes_checkpoints_nor_its_own_statements():
    old_event(400, human_id=1)
    seal_as_of(399)
    assert apply_retention(days=300) == 1
    first_run = AuditEvent.objects.get(event_type=RETENTION_EVENT)
    old_event(400, human_id=1)
    seal_pending_events()
    checkpoints = set(AuditCheckpoint.objects.values_list("id", flat=True))

    # A day later with no retention period: everything sealed so far has expired, the first
    # statement included.
    assert apply_retention(now=timezone.now() + timedelta(days=1), days=0) >= 1
    assert not AuditEvent.objects.exclude(event_type=RETENTION_EVENT).filter(
        chain_seq__lte=first_run.chain_seq
    )
    assert AuditEvent.objects.filter(event_type=RETENTION_EVENT).count() == 2
    assert AuditEvent.objects.filter(pk=first_run.pk).exists()
    assert set(AuditCheckpoint.objects.values_list("id", flat=True)) >= checkpoints
    result = verify_chain()
    assert result.ok, result.message


@pytest.mark.django_db
def test_the_retention_statement_is_signed_with_a_key_published_in_the_jwks():
    old_event(400, human_id=1)
    seal_as_of(399)
    apply_retention()
    run = AuditEvent.objects.get(event_type=RETENTION_EVENT)
    assert run.chain_seq > run.detail["through_seq"]  # chained at once, after what it speaks for
    token = jws.JWS()
    token.deserialize(run.detail["signature"])
    keys = Client().get("/.well-known/jwks.json").json()["keys"]
    (published,) = [key for key in keys if key["kid"] == token.jose_header["kid"]]
    token.verify(jwk.JWK(**published), alg="RS256")
    claims = json.loads(token.payload)
    for name in ("through_seq", "cutoff", "deleted", "kept", "kept_digest"):
        assert claims[name] == run.detail[name]


@pytest.mark.django_db
def test_a_retention_statement_with_an_altered_kept_count_is_not_trusted():
    held = old_event(400, human_id=2)
    old_event(400, human_id=1)
    seal_as_of(399)
    LegalHold.objects.create(name="case", human_id=2)
    apply_retention()
    run = AuditEvent.objects.get(event_type=RETENTION_EVENT)
    # Deleting the held event and lowering the count in a copy of the statement, signature kept:
    as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [held])
    forged = AuditEvent.objects.create(
        event_type=RETENTION_EVENT, outcome="allow", detail={**run.detail, "kept": run.detail["kept"] - 1}
    )
    seal_pending_events()
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, forged.id)


@pytest.mark.django_db
def test_an_edited_kept_event_whose_predecessor_is_kept_is_reported_at_that_event():
    first, second = old_event(400, human_id=2), old_event(400, human_id=2)
    old_event(400, human_id=1)
    seal_as_of(399)
    LegalHold.objects.create(name="case", human_id=2)
    assert apply_retention() == 1
    assert verify_chain().ok
    as_superuser("UPDATE audit_auditevent SET outcome = 'deny' WHERE id = %s", [second])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, second)
    assert AuditEvent.objects.filter(pk=first).exists()
