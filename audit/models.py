"""Audit events: who (human), through which agent, on which server and tool, what was decided.

The events table is append-only and hash-chained (see ``audit.chain``); the other models here
are the chain's signed checkpoints, legal holds that retention respects, export jobs and the
receipts that make the MCP servers' event API idempotent.
"""

import uuid

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    class Outcome(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        ERROR = "error"

    # On PostgreSQL the table is partitioned by month on ``occurred`` (audit.partitions), so the
    # database's primary key is (id, occurred); ids still come from one sequence and stay unique.
    id = models.BigAutoField(primary_key=True)
    occurred = models.DateTimeField(auto_now_add=True, db_index=True)
    event_type = models.CharField(max_length=64)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    reason = models.CharField(max_length=64, blank=True)
    # Who did it, when someone other than the human (an admin, an approver).
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True)
    # Denormalised on purpose: the trail must outlive deleted users, agents and servers.
    human_id = models.BigIntegerField(null=True, blank=True)
    human_username = models.CharField(max_length=150, blank=True)
    agent_client_id = models.CharField(max_length=255, blank=True)
    agent_name = models.CharField(max_length=255, blank=True)
    # The chain of actors when one exists (RFC 8693 style, outermost first):
    # [{"type": "agent", "id": client_id}, {"type": "server", "id": name}, ...]
    actors = models.JSONField(default=list, blank=True)
    server_name = models.CharField(max_length=100, blank=True)
    server_resource = models.CharField(max_length=500, blank=True)
    tool = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=50, blank=True)
    delegation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # The token's database id and SHA-256 (DOT's token_checksum), never the token itself:
    # the checksum still links events after the token row is gone.
    token_id = models.BigIntegerField(null=True, blank=True)
    token_checksum = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    # Set once by the sealer (audit.chain), together: the event's position in the chain (sealing
    # order, which is not id order when a lower id commits late) and SHA-256 over the previous
    # position's chain_hash and this event's content. The database refuses any other change to a
    # row. NULL = not sealed yet.
    chain_seq = models.BigIntegerField(null=True, blank=True, editable=False)
    chain_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["-id"]
        permissions = [("export_auditevent", "Can export audit events")]
        # One index per search filter, each with time so "X's events in a period" is a range scan.
        indexes = [
            models.Index(fields=["human_id", "occurred"], name="audit_human_time"),
            # Searches and exports name the human by username (the trail outlives the account).
            models.Index(fields=["human_username", "occurred"], name="audit_human_name_time"),
            models.Index(fields=["agent_client_id", "occurred"], name="audit_agent_time"),
            models.Index(fields=["server_name", "occurred"], name="audit_server_time"),
            models.Index(fields=["outcome", "occurred"], name="audit_outcome_time"),
            models.Index(fields=["event_type", "occurred"], name="audit_type_time"),
            models.Index(fields=["tool", "occurred"], name="audit_tool_time"),
            models.Index(fields=["token_checksum"], name="audit_token_checksum"),
            models.Index(fields=["chain_seq"], name="audit_chain_seq"),
            # The sealer's work queue stays small however large the table grows.
            models.Index(fields=["id"], condition=models.Q(chain_seq__isnull=True), name="audit_unsealed"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred:%Y-%m-%d %H:%M:%S} {self.event_type} {self.outcome}"


class AuditCheckpoint(models.Model):
    """A signed statement: the chain up to position ``chain_seq`` (event ``last_event_id``) ends in
    ``chain_hash``. It covers the events with ``chain_seq`` up to its own, not "ids up to
    last_event_id": chain order is sealing order.

    Retention deletes events only below a checkpoint, so the chain stays verifiable from it.
    """

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(auto_now_add=True)
    chain_seq = models.BigIntegerField(unique=True)
    last_event_id = models.BigIntegerField(unique=True)
    event_count = models.BigIntegerField(help_text="Events chained since the previous checkpoint.")
    chain_hash = models.CharField(max_length=64)
    # JWS (compact) over the checkpoint's fields, signed with the console's OIDC key, so anyone
    # holding the published JWKS can check it.
    signature = models.TextField()

    class Meta:
        ordering = ["-chain_seq"]

    def __str__(self) -> str:
        return f"checkpoint at event {self.last_event_id}"


class LegalHold(models.Model):
    """Events matching an active hold survive retention until it is released."""

    name = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    human_id = models.BigIntegerField(null=True, blank=True)
    agent_client_id = models.CharField(max_length=255, blank=True)
    server_name = models.CharField(max_length=100, blank=True)
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    released = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class AuditExport(models.Model):
    """An export job (Celery): its filters, progress, the file and its manifest."""

    class Format(models.TextChoices):
        CSV = "csv"
        JSONL = "jsonl"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    rows_total = models.BigIntegerField(null=True, blank=True)
    rows_written = models.BigIntegerField(default=0)
    file_path = models.CharField(max_length=500, blank=True)
    # Row count, SHA-256 of the file, and the chain checkpoint the export covers.
    manifest = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.format} export {self.created:%Y-%m-%d %H:%M}"


class EventReceipt(models.Model):
    """The event ids an MCP server already reported: a batch sent twice is recorded once."""

    server_id = models.BigIntegerField()
    event_id = models.CharField(max_length=128)
    audit_event_id = models.BigIntegerField()
    received = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server_id", "event_id"], name="one_receipt_per_server_event")
        ]

    def __str__(self) -> str:
        return f"{self.server_id}/{self.event_id}"
