"""The hash chain over audit events, its signed checkpoints and its verification.

Writers only INSERT; they never wait for each other. A sealer (``seal_pending_events``, run by a
beat task every few seconds and by ``manage.py seal_audit``) takes an advisory lock, reads the
committed events that have no chain position yet in id order, and gives each the next position
(``chain_seq``) and ``chain_hash = SHA-256(previous chain_hash + canonical(event))``. Chain order
is sealing order: an event whose transaction commits late (a lower id after a higher one was
sealed) simply gets a later position, so nothing is skipped and nothing is re-chained. Each
sealing batch ends with an ``AuditCheckpoint`` signed (JWS, RS256) with the console's OIDC key,
checkable against /.well-known/jwks.json.

Retention (audit.retention) deletes events only up to a checkpoint and records what it kept, so
``verify_chain`` starts from that checkpoint's signed hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from jwcrypto import jwk, jws
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
# pg_advisory_xact_lock key: "audit-seal" as a number, shared by every sealer process.
_SEAL_LOCK = 0x6175646974_5EA1


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
    with transaction.atomic():
        if not _take_seal_lock():
            return 0
        # Every batch ends in a checkpoint, so the latest one is where the chain ends (even after
        # retention deleted the events around it).
        last = latest_checkpoint()
        seq, previous = (last.chain_seq, last.chain_hash) if last else (0, GENESIS)
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


def _take_seal_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite serialises writers itself.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_SEAL_LOCK])
        return cursor.fetchone()[0]


# --- Checkpoint signatures -------------------------------------------------------------------------


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
    key = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    token = jws.JWS(json.dumps(_checkpoint_claims(checkpoint), sort_keys=True, separators=(",", ":")))
    header = {"alg": "RS256", "kid": key.thumbprint(), "typ": "audit-checkpoint+jws"}
    token.add_signature(key, alg="RS256", protected=json.dumps(header))
    checkpoint.signature = token.serialize(compact=True)
    checkpoint.save()
    return checkpoint


def _verification_keys() -> dict[str, jwk.JWK]:
    """The keys /.well-known/jwks.json publishes (active and inactive), by kid."""
    keys = {}
    for pem in [oauth2_settings.OIDC_RSA_PRIVATE_KEY, *oauth2_settings.OIDC_RSA_PRIVATE_KEYS_INACTIVE]:
        key = jwk.JWK.from_json(jwk_from_pem(pem).export_public())
        keys[key.thumbprint()] = key
    return keys


def checkpoint_signature_ok(checkpoint: AuditCheckpoint, keys: dict[str, jwk.JWK] | None = None) -> bool:
    keys = keys if keys is not None else _verification_keys()
    token = jws.JWS()
    try:
        token.deserialize(checkpoint.signature)
        key = keys.get(token.jose_header.get("kid", ""))
        if key is None:
            return False
        token.verify(key, alg="RS256")
        return json.loads(token.payload) == _checkpoint_claims(checkpoint)
    except (jws.InvalidJWSObject, jws.InvalidJWSSignature, ValueError):
        return False


# --- Verification --------------------------------------------------------------------------------


def kept_digest(events: Iterable[AuditEvent]) -> tuple[int, str]:
    """Count and SHA-256 of the events retention kept below its horizon (legal holds), in chain order."""
    digest, count = hashlib.sha256(), 0
    for event in events:
        digest.update(canonical(event) + b"\n")
        count += 1
    return count, digest.hexdigest()


def retention_horizon() -> tuple[int, AuditEvent | None]:
    """The chain position up to which retention has deleted, and the event that recorded it."""
    last_run = AuditEvent.objects.filter(event_type=RETENTION_EVENT).order_by("-id").first()
    if last_run is None:
        return 0, None
    return int(last_run.detail["through_seq"]), last_run


def _by_position(queryset: QuerySet) -> Iterator:
    return queryset.order_by("chain_seq").iterator(chunk_size=2000)


def kept_events(horizon: int) -> Iterator[AuditEvent]:
    """The events still present at or below the retention horizon (held ones), in chain order."""
    return _by_position(AuditEvent.objects.filter(chain_seq__lte=horizon))


def verify_chain() -> VerifyResult:
    """Recompute the chain from the earliest remaining checkpoint and check every signature."""
    unsealed = AuditEvent.objects.filter(chain_seq__isnull=True).count()
    checkpoints_checked, checked = 0, 0

    def broken(event_id: int | None, message: str) -> VerifyResult:
        return VerifyResult(False, checked, event_id, message, checkpoints_checked, unsealed)

    keys = _verification_keys()
    for checkpoint in _by_position(AuditCheckpoint.objects.all()):
        if not checkpoint_signature_ok(checkpoint, keys):
            return broken(checkpoint.last_event_id, f"checkpoint {checkpoint.chain_seq} has a bad signature")
        checkpoints_checked += 1

    horizon, retention_event = retention_horizon()
    seq, previous = 0, GENESIS
    if horizon:
        start = AuditCheckpoint.objects.filter(chain_seq=horizon).first()
        if start is None:
            return broken(retention_event.id, f"no checkpoint at retention horizon {horizon}")
        seq, previous = horizon, start.chain_hash

    checkpoints = _by_position(AuditCheckpoint.objects.filter(chain_seq__gt=horizon))
    checkpoint = next(checkpoints, None)
    for event in _by_position(AuditEvent.objects.filter(chain_seq__gt=horizon)):
        if event.chain_seq != seq + 1:
            return broken(event.id, f"chain positions {seq + 1}..{event.chain_seq - 1} are missing")
        previous = chain_hash(previous, event)
        if previous != event.chain_hash:
            return broken(event.id, f"event {event.id} does not match its chain hash")
        seq, checked = event.chain_seq, checked + 1
        if checkpoint is not None and checkpoint.chain_seq == seq:
            if (checkpoint.chain_hash, checkpoint.last_event_id) != (previous, event.id):
                return broken(event.id, f"event {event.id} differs from signed checkpoint {seq}")
            checkpoint = next(checkpoints, None)
    if checkpoint is not None:  # A signed checkpoint beyond the last event: the tail was deleted.
        return broken(checkpoint.last_event_id, f"events after chain position {seq} are missing")

    if retention_event is not None:
        count, digest = kept_digest(kept_events(horizon))
        if (count, digest) != (retention_event.detail["kept"], retention_event.detail["kept_digest"]):
            return broken(
                retention_event.id,
                f"the {count} events kept below retention horizon {horizon} differ from what retention "
                f"recorded in event {retention_event.id}",
            )
        checked += count

    message = f"chain intact: {checked} events, {checkpoints_checked} checkpoints"
    if unsealed:
        message += f", {unsealed} events not sealed yet"
    return VerifyResult(True, checked, None, message, checkpoints_checked, unsealed)
