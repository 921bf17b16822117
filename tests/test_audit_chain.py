"""The audit trail is append-only and hash-chained; verify_audit finds where it was tampered with."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from jwcrypto import jwk, jws

from audit.chain import (
    RETENTION_EVENT,
    ChainBroken,
    kept_digest,
    kept_events,
    latest_checkpoint,
    retention_statement,
    seal_pending_events,
    verify_chain,
)
from audit.events import record
from audit.models import AuditCheckpoint, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def events() -> list[AuditEvent]:
    """Ten events in three sealing batches, so there are several signed checkpoints.

    Whatever the setup recorded before (roles created after migrate) is sealed first."""
    seal_pending_events()
    made = []
    for batch in (3, 3, 4):
        made += [
            record("tool_call.decision", outcome="allow", tool="list_events", detail={"n": n})
            for n in range(batch)
        ]
        assert seal_pending_events() == batch
    return made


def as_superuser(sql: str, params: list) -> None:
    """Write past the append-only trigger, as a database superuser could."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")


def verify_audit_output() -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_an_untouched_log_verifies(events):
    total = AuditEvent.objects.count()
    result = verify_chain()
    assert (result.ok, result.events_checked, result.broken_at_event_id) == (True, total, None)
    assert result.checkpoints_checked == AuditCheckpoint.objects.count() >= 3
    assert f"chain intact: {total} events" in verify_audit_output()


def test_events_not_sealed_yet_are_reported_and_sealed_by_the_command(events):
    record("consent.granted", outcome="allow")
    assert verify_chain().unsealed == 1
    call_command("seal_audit", stdout=None)
    result = verify_chain()
    assert (result.ok, result.events_checked, result.unsealed) == (True, AuditEvent.objects.count(), 0)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "edited"),
        ("human_username", "mallory"),
        ("detail", json.dumps({"n": 99})),
        ("outcome", "deny"),
    ],
)
def test_an_edited_event_breaks_the_chain_at_that_event(events, column, value):
    victim = events[4]
    as_superuser(f"UPDATE audit_auditevent SET {column} = %s WHERE id = %s", [value, victim.id])  # noqa: S608
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, victim.id)
    with pytest.raises(CommandError, match=f"BROKEN at event {victim.id}"):
        call_command("verify_audit")


def test_an_edit_that_also_rewrites_the_events_hash_still_breaks_at_the_next_event(events):
    victim = events[4]
    as_superuser(
        "UPDATE audit_auditevent SET reason = 'edited', chain_hash = %s WHERE id = %s", ["0" * 64, victim.id]
    )
    assert verify_chain().broken_at_event_id == victim.id


def test_a_deleted_event_breaks_the_chain_at_the_event_after_it(events):
    as_superuser("DELETE FROM audit_auditevent WHERE id = %s", [events[4].id])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, events[5].id)
    assert "missing" in result.message


def test_deleting_the_newest_events_is_caught_by_the_signed_checkpoint(events):
    as_superuser("DELETE FROM audit_auditevent WHERE id >= %s", [events[7].id])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, events[9].id)


def test_a_forged_checkpoint_is_caught(events):
    checkpoint = AuditCheckpoint.objects.order_by("chain_seq").first()
    as_superuser("UPDATE audit_auditcheckpoint SET chain_hash = %s WHERE id = %s", ["f" * 64, checkpoint.pk])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, checkpoint.last_event_id)
    assert "signature" in result.message


def test_checkpoints_are_signed_with_a_key_published_in_the_jwks(events):
    keys = Client().get("/.well-known/jwks.json").json()["keys"]
    for checkpoint in AuditCheckpoint.objects.all():
        token = jws.JWS()
        token.deserialize(checkpoint.signature)
        (published,) = [key for key in keys if key["kid"] == token.jose_header["kid"]]
        token.verify(jwk.JWK(**published), alg="RS256")
        claims = json.loads(token.payload)
        assert (claims["chain_seq"], claims["chain_hash"]) == (checkpoint.chain_seq, checkpoint.chain_hash)


def refused(operation) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic():
        operation()
    return str(caught.value)


def test_the_database_refuses_update_and_delete_of_events(events):
    sealed = events[0]
    assert "append-only" in refused(lambda: AuditEvent.objects.filter(pk=sealed.pk).update(reason="x"))
    assert "append-only" in refused(
        lambda: AuditEvent.objects.filter(pk=sealed.pk).update(chain_hash="0" * 64)
    )
    assert "append-only" in refused(lambda: AuditEvent.objects.filter(pk=sealed.pk).delete())
    assert "append-only" in refused(lambda: AuditEvent.objects.all().delete())
    assert AuditEvent.objects.get(pk=sealed.pk).reason == sealed.reason


def test_the_sealer_may_only_add_the_chain_fields_to_an_unsealed_event():
    event = record("x", outcome="allow")
    pending = AuditEvent.objects.filter(pk=event.pk)
    assert "append-only" in refused(lambda: pending.update(chain_seq=1, chain_hash="a" * 64, reason="x"))
    assert "append-only" in refused(lambda: pending.update(reason="x"))
    pending.update(chain_seq=1, chain_hash="a" * 64)
    assert "append-only" in refused(lambda: pending.update(chain_seq=2, chain_hash="b" * 64))


def delete_as_retention(event_ids: list[int]) -> None:
    """Delete events the way the application role can (docs/AUDIT.md): SET LOCAL, then DELETE."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL audit.retention = 'on'")
        cursor.execute("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [event_ids])


def hand_written_retention_event(**detail) -> AuditEvent:
    """An ``audit.retention`` event as anyone who can INSERT could write it: right shape, no signature."""
    through = latest_checkpoint().chain_seq
    kept, digest = kept_digest(kept_events(through))
    statement = {"through_seq": through, "cutoff": "x", "deleted": 0, "kept": kept, "kept_digest": digest}
    return record(RETENTION_EVENT, outcome="allow", detail={**statement, **detail})


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
def test_a_hand_written_retention_event_does_not_hide_a_deleted_event(events, sealed):
    delete_as_retention([events[4].id])
    forged = hand_written_retention_event()
    if sealed:
        seal_pending_events()
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, forged.id)
    assert "not a signed retention statement" in result.message


def test_a_hand_written_retention_event_does_not_hide_an_edited_event(events):
    as_superuser("UPDATE audit_auditevent SET outcome = 'deny' WHERE id = %s", [events[4].id])
    forged = hand_written_retention_event()
    seal_pending_events()
    assert (verify_chain().ok, verify_chain().broken_at_event_id) == (False, forged.id)


@pytest.mark.parametrize("detail", [{}, {"through_seq": None}, {"through_seq": "3"}, {"signature": 7}])
def test_a_malformed_retention_event_is_reported_as_a_break_not_a_crash(events, detail):
    forged = record(RETENTION_EVENT, outcome="allow", detail=detail)
    seal_pending_events()
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, forged.id)
    with pytest.raises(CommandError, match=f"BROKEN at event {forged.id}"):
        call_command("verify_audit")


def test_a_signed_retention_statement_counts_only_when_chained_after_the_positions_it_covers(events):
    through = latest_checkpoint().chain_seq + 5  # positions that do not exist yet
    statement = retention_statement(through_seq=through, cutoff="x", deleted=0, kept=0, kept_digest="0")
    early = record(RETENTION_EVENT, outcome="allow", detail=statement)
    seal_pending_events()
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, early.id)
    assert "at or below the position" in result.message


def test_the_database_refuses_update_and_delete_of_checkpoints(events):
    checkpoint = latest_checkpoint()
    checkpoints = AuditCheckpoint.objects.filter(pk=checkpoint.pk)
    assert "append-only" in refused(lambda: checkpoints.update(chain_hash="f" * 64))
    assert "append-only" in refused(lambda: checkpoints.delete())
    assert "append-only" in refused(lambda: AuditCheckpoint.objects.all().delete())
    assert AuditCheckpoint.objects.get(pk=checkpoint.pk).chain_hash == checkpoint.chain_hash


def test_deleting_the_newest_events_and_their_checkpoint_is_refused(events):
    delete_as_retention([event.id for event in events[6:]])
    assert "append-only" in refused(lambda: latest_checkpoint().delete())
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, events[9].id)


def test_a_removed_latest_checkpoint_is_reported_and_the_sealer_will_not_reuse_its_positions(events):
    newest = latest_checkpoint()
    as_superuser("DELETE FROM audit_auditcheckpoint WHERE id = %s", [newest.pk])
    result = verify_chain()
    assert (result.ok, result.broken_at_event_id) == (False, events[6].id)
    assert "no signed checkpoint" in result.message
    late = record("consent.granted", outcome="allow")
    with pytest.raises(ChainBroken, match=f"event {events[6].id}"):
        seal_pending_events()
    assert AuditEvent.objects.get(pk=late.pk).chain_seq is None


def test_migration_0003_numbers_checkpoints_that_existed_before_chain_positions(tmp_path):
    """Two checkpoints from migration 0002 get distinct positions (a default would collide)."""
    root = Path(__file__).resolve().parent.parent
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(DJANGO_DEBUG="1", CONSOLE_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="console.settings")

    def migrate(*target: str) -> None:
        command = [sys.executable, "manage.py", "migrate", *target, "--no-input"]
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)  # noqa: S603

    migrate()  # every app, so the post-migrate hooks find their tables; then audit back to 0002
    migrate("audit", "0002")
    database = sqlite3.connect(tmp_path / "console.sqlite3")
    with database:
        database.executemany(
            "INSERT INTO audit_auditcheckpoint (created, last_event_id, event_count, chain_hash, signature)"
            " VALUES ('2026-01-01 00:00:00', ?, 1, ?, 'sig')",
            [(7, "a" * 64), (3, "b" * 64)],
        )
    migrate()
    rows = database.execute(
        "SELECT last_event_id, chain_seq FROM audit_auditcheckpoint ORDER BY 1"
    ).fetchall()
    database.close()
    assert rows == [(3, 1), (7, 2)]
