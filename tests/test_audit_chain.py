"""The audit trail is append-only and hash-chained; verify_audit finds where it was tampered with."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from jwcrypto import jwk, jws

from audit.chain import seal_pending_events, verify_chain
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
    AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(chain_hash="f" * 64)
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
