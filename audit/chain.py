"""The hash chain over audit events, its signed checkpoints and its verification.

Writers only INSERT; they never wait for each other. A sealer (``seal_pending_events``, run by a
beat task every few seconds and by ``manage.py seal_audit``) takes an advisory lock, reads the
committed events that have no chain position yet in id order, and gives each the next position
(``chain_seq``) and ``chain_hash = SHA-256(previous chain_hash + canonical(event))``. Chain order
is sealing order: an event whose transaction commits late (a lower id after a higher one was
sealed) simply gets a later position, so nothing is skipped and nothing is re-chained. Each
sealing batch ends with an ``AuditCheckpoint`` signed (JWS, RS256) with the console's OIDC key,
checkable against /.well-known/jwks.json.

Retention (audit.retention) deletes events only up to a checkpoint and records what it kept in a
statement signed with the same key, so ``verify_chain`` starts from that checkpoint's signed hash.
Checkpoints are never updated or deleted (a trigger refuses it on PostgreSQL, migration 0006).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from jwcrypto import jwk, jws
from jwcrypto.common import JWException
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.utils import jwk_from_pem

from audit.models import AuditCheckpoint, AuditEvent

GENESIS = "0" * 64
RETENTION_EVENT = "audit.retention"
# The columns the chain covers (version 1 of the serialisation). Explicit, so that a column added
# later does not change the hashes of events sealed before it.
CHAIN_FIELDS = (
    "id", "chain_seq", "occurred", "event_type", "outcome", "reason", "actor_id", "actor_username",
    "human_id", "human_username", "agent_client_id", "agent_name", "actors", "server_name",
    "server_resource", "tool", "action", "delegation_id", "token_id", "token_checksum", "client_ip",
    "user_agent", "correlation_id", "detail",
)  # fmt: skip
# The signed fields of a retention statement (the detail of an ``audit.retention`` event).
RETENTION_CLAIMS = ("through_seq", "cutoff", "deleted", "kept", "kept_digest")
# Advisory lock key: "audit-seal" as a number, shared by every sealer process.
_SEAL_LOCK = 0x6175646974_5EA1


class ChainBroken(RuntimeError):
    """The stored chain contradicts itself; the sealer refuses to extend it."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events_checked: int
    broken_at_event_id: int | None
    message: str
    checkpoints_checked: int = 0
    unsealed: int = 0


def canonical(event: AuditEvent) -> bytes:
    """The event's covered columns as canonical JSON (sorted keys, UTC times with microseconds)."""
    values = {}
    for name in CHAIN_FIELDS:
        value = getattr(event, name)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        values[name] = value
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(previous: str, event: AuditEvent) -> str:
    return hashlib.sha256(previous.encode() + canonical(event)).hexdigest()


def latest_checkpoint() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-chain_seq").first()


# --- Sealing -------------------------------------------------------------------------------------


def seal_pending_events(batch_size: int = 1000, max_batches: int = 100) -> int:
    """Chain the committed, unsealed events; return how many were sealed (0 if another sealer runs)."""
    sealed = 0
    for _ in range(max_batches):
        count = _seal_batch(batch_size)
        sealed += count
        if count < batch_size:
            break
    return sealed


def _seal_batch(batch_size: int) -> int:
    with transaction.atomic(), try_advisory_lock(_SEAL_LOCK, session=False) as locked:
        if not locked:
            return 0
        # Every batch ends in a checkpoint, so the latest one is where the chain ends (even after
        # retention deleted the events around it).
        last = latest_checkpoint()
        seq, previous = (last.chain_seq, last.chain_hash) if last else (0, GENESIS)
        beyond = AuditEvent.objects.filter(chain_seq__gt=seq).order_by("chain_seq").first()
        if beyond is not None:
            # Its checkpoint was removed: continuing would hand out used positions again.
            raise ChainBroken(
                f"event {beyond.id} is sealed at position {beyond.chain_seq}, after the last checkpoint {seq}"
            )
        pending = list(AuditEvent.objects.filter(chain_seq__isnull=True).order_by("id")[:batch_size])
        if not pending:
            return 0
        for event in pending:
            seq += 1
            event.chain_seq = seq
            event.chain_hash = previous = chain_hash(previous, event)
        AuditEvent.objects.bulk_update(pending, ["chain_seq", "chain_hash"])
        _write_checkpoint(pending[-1], len(pending))
        return len(pending)


@contextmanager
def try_advisory_lock(key: int, *, session: bool) -> Iterator[bool]:
    """Try to take a PostgreSQL advisory lock; yield whether it was taken.

    A transaction lock (``session=False``, inside ``atomic``) ends with the transaction; a session
    lock, for work spanning several transactions, is released on exit. Elsewhere this yields True:
    SQLite serialises writers itself.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    scope = "" if session else "_xact"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_try_advisory{scope}_lock(%s)", [key])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken and session:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


# --- Signatures (checkpoints and retention statements) ------------------------------------------


def _sign(claims: dict, typ: str) -> str:
    """A compact JWS (RS256) over ``claims`` with the console's OIDC key, as /.well-known/jwks.json
    publishes it."""
    key = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    token = jws.JWS(json.dumps(claims, sort_keys=True, separators=(",", ":")))
    header = {"alg": "RS256", "kid": key.thumbprint(), "typ": typ}
    token.add_signature(key, alg="RS256", protected=json.dumps(header))
    return token.serialize(compact=True)


def _signed(signature: object, claims: dict, typ: str, keys: dict[str, jwk.JWK]) -> bool:
    """Whether ``signature`` is a JWS of type ``typ`` over exactly ``claims`` by a published key."""
    if not isinstance(signature, str):
        return False
    token = jws.JWS()
    try:
        token.deserialize(signature)
        header = token.jose_header
        key = keys.get(header.get("kid", "")) if isinstance(header, dict) else None
        if key is None or header.get("typ") != typ:
            return False
        token.verify(key, alg="RS256")
        return json.loads(token.payload) == claims
    except (JWException, ValueError, TypeError, AttributeError):  # whatever a stored forgery holds
        return False


def _verification_keys() -> dict[str, jwk.JWK]:
    """The keys /.well-known/jwks.json publishes (active and inactive), by kid."""
    keys = {}
    for pem in [oauth2_settings.OIDC_RSA_PRIVATE_KEY, *oauth2_settings.OIDC_RSA_PRIVATE_KEYS_INACTIVE]:
        key = jwk.JWK.from_json(jwk_from_pem(pem).export_public())
        keys[key.thumbprint()] = key
    return keys


_CHECKPOINT_TYP = "audit-checkpoint+jws"
_RETENTION_TYP = "audit-retention+jws"


def _checkpoint_claims(checkpoint: AuditCheckpoint) -> dict:
    return {
        "iss": settings.ISSUER,
        "chain_seq": checkpoint.chain_seq,
        "last_event_id": checkpoint.last_event_id,
        "event_count": checkpoint.event_count,
        "chain_hash": checkpoint.chain_hash,
    }


def _write_checkpoint(event: AuditEvent, count: int) -> AuditCheckpoint:
    checkpoint = AuditCheckpoint(
        chain_seq=event.chain_seq, last_event_id=event.id, event_count=count, chain_hash=event.chain_hash
    )
    checkpoint.signature = _sign(_checkpoint_claims(checkpoint), _CHECKPOINT_TYP)
    checkpoint.save()
    return checkpoint


def checkpoint_signature_ok(checkpoint: AuditCheckpoint, keys: dict[str, jwk.JWK] | None = None) -> bool:
    keys = keys if keys is not None else _verification_keys()
    return _signed(checkpoint.signature, _checkpoint_claims(checkpoint), _CHECKPOINT_TYP, keys)


def _retention_claims(detail: dict) -> dict:
    return {"iss": settings.ISSUER, **{name: detail.get(name) for name in RETENTION_CLAIMS}}


def retention_statement(*, through_seq: int, cutoff: str, deleted: int, kept: int, kept_digest: str) -> dict:
    """The detail of an ``audit.retention`` event: what retention did, signed like a checkpoint."""
    detail = {"through_seq": through_seq, "cutoff": cutoff, "deleted": deleted, "kept": kept}
    detail["kept_digest"] = kept_digest
    return {**detail, "signature": _sign(_retention_claims(detail), _RETENTION_TYP)}


def retention_problem(event: AuditEvent, keys: dict[str, jwk.JWK]) -> str | None:
    """Why this ``audit.retention`` event cannot be trusted as the horizon; None if it can.

    Anyone who can INSERT can write such an event, so only a signed statement counts, and only once
    it is chained after the positions it speaks for (deleting it then leaves a gap).
    """
    detail = event.detail
    if not isinstance(detail, dict) or not _signed(
        detail.get("signature"), _retention_claims(detail), _RETENTION_TYP, keys
    ):
        return f"retention event {event.id} is not a signed retention statement"
    through = detail["through_seq"]
    if not isinstance(through, int) or through < 1:
        return f"retention event {event.id} names no chain position"
    if event.chain_seq is not None and event.chain_seq <= through:
        return f"retention event {event.id} is chained at or below the position {through} it speaks for"
    return None


def _retention_events() -> Iterator[AuditEvent]:
    """The retention events in chain order, the ones not sealed yet last."""
    events = AuditEvent.objects.filter(event_type=RETENTION_EVENT)
    return events.order_by(F("chain_seq").asc(nulls_last=True), "id").iterator(chunk_size=2000)


def retention_horizon(keys: dict[str, jwk.JWK] | None = None) -> tuple[int, AuditEvent | None]:
    """The chain position up to which retention has deleted, and the trusted event that says so.

    That is the latest sealed, signed retention statement; untrusted ones are ignored here and
    reported by ``verify_chain``.
    """
    keys = keys if keys is not None else _verification_keys()
    horizon: tuple[int, AuditEvent | None] = (0, None)
    for event in _retention_events():
        if event.chain_seq is not None and retention_problem(event, keys) is None:
            horizon = event.detail["through_seq"], event
    return horizon


# --- Verification --------------------------------------------------------------------------------


def kept_digest(events: Iterable[AuditEvent]) -> tuple[int, str]:
    """Count and SHA-256 of the events retention kept below its horizon (legal holds), in chain order."""
    digest, count = hashlib.sha256(), 0
    for event in events:
        digest.update(canonical(event) + b"\n")
        count += 1
    return count, digest.hexdigest()


def _by_position(queryset: QuerySet) -> Iterator:
    return queryset.order_by("chain_seq").iterator(chunk_size=2000)


def kept_events(horizon: int) -> Iterator[AuditEvent]:
    """The events still present at or below the retention horizon (held ones), in chain order."""
    return _by_position(AuditEvent.objects.filter(chain_seq__lte=horizon))


class _Break(Exception):  # noqa: N818 -- control flow inside verify_chain, never raised out of it
    def __init__(self, event_id: int | None, message: str) -> None:
        super().__init__(message)
        self.event_id, self.message = event_id, message


@dataclass
class _Tally:
    events: int = 0
    checkpoints: int = 0


def verify_chain() -> VerifyResult:
    """Recompute the chain from the retention horizon (or the start) and check every signature."""
    unsealed = AuditEvent.objects.filter(chain_seq__isnull=True).count()
    tally = _Tally()
    try:
        _verify(tally)
    except _Break as found:
        return VerifyResult(False, tally.events, found.event_id, found.message, tally.checkpoints, unsealed)
    message = f"chain intact: {tally.events} events, {tally.checkpoints} checkpoints"
    if unsealed:
        message += f", {unsealed} events not sealed yet"
    return VerifyResult(True, tally.events, None, message, tally.checkpoints, unsealed)


def _verify(tally: _Tally) -> None:
    keys = _verification_keys()
    last_signed = 0
    for checkpoint in _by_position(AuditCheckpoint.objects.all()):
        if not checkpoint_signature_ok(checkpoint, keys):
            raise _Break(checkpoint.last_event_id, f"checkpoint {checkpoint.chain_seq} has a bad signature")
        tally.checkpoints += 1
        last_signed = checkpoint.chain_seq

    statement = None
    for event in _retention_events():
        if problem := retention_problem(event, keys):
            raise _Break(event.id, problem)
        if event.chain_seq is not None:  # a statement not sealed yet counts once it is
            statement = event
    horizon = statement.detail["through_seq"] if statement else 0
    seq, previous = 0, GENESIS
    if horizon:
        start = AuditCheckpoint.objects.filter(chain_seq=horizon).first()
        if start is None:
            raise _Break(statement.id, f"no checkpoint at retention horizon {horizon}")
        seq, previous = horizon, start.chain_hash

    checkpoints = _by_position(AuditCheckpoint.objects.filter(chain_seq__gt=horizon))
    checkpoint = next(checkpoints, None)
    for event in _by_position(AuditEvent.objects.filter(chain_seq__gt=horizon)):
        if event.chain_seq != seq + 1:
            raise _Break(event.id, f"chain positions {seq + 1}..{event.chain_seq - 1} are missing")
        if event.chain_seq > last_signed:  # the sealer signs every batch in its own transaction
            raise _Break(event.id, f"no signed checkpoint covers position {event.chain_seq}: one was removed")
        previous = chain_hash(previous, event)
        if previous != event.chain_hash:
            raise _Break(event.id, f"event {event.id} does not match its chain hash")
        seq, tally.events = event.chain_seq, tally.events + 1
        if checkpoint is not None and checkpoint.chain_seq == seq:
            if (checkpoint.chain_hash, checkpoint.last_event_id) != (previous, event.id):
                raise _Break(event.id, f"event {event.id} differs from signed checkpoint {seq}")
            checkpoint = next(checkpoints, None)
    if checkpoint is not None:  # A signed checkpoint beyond the last event: the tail was deleted.
        raise _Break(checkpoint.last_event_id, f"events after chain position {seq} are missing")
    if statement is not None:
        tally.events += _verify_kept(horizon, statement)


def _verify_kept(horizon: int, statement: AuditEvent) -> int:
    """Check the events kept below the horizon against the signed retention statement.

    Where a kept event's predecessor is kept too, its hash link is checked, which names the edited
    event; otherwise an edit shows only in the digest, reported at the retention event.
    """

    def linked() -> Iterator[AuditEvent]:
        seq, previous = 0, GENESIS
        for event in kept_events(horizon):
            if event.chain_seq == seq + 1 and chain_hash(previous, event) != event.chain_hash:
                raise _Break(event.id, f"event {event.id} does not match its chain hash")
            seq, previous = event.chain_seq, event.chain_hash
            yield event

    count, digest = kept_digest(linked())
    if (count, digest) != (statement.detail["kept"], statement.detail["kept_digest"]):
        raise _Break(
            statement.id,
            f"the {count} events kept below retention horizon {horizon} differ from what retention "
            f"recorded in event {statement.id}",
        )
    return count
