"""The rules of the event API: what an MCP server may report, and how its report joins the trail.

An MCP server reports what happened after each tool call (``tool_call.result``). Each event names
the bearer token the agent used, so it is linked to the delegation and to the human behind it; a
server may report only on tokens bound to itself. Events are idempotent by the server's own
``event_id`` (``EventReceipt``): a batch sent twice is recorded once.

A batch is atomic: it is recorded whole, or refused whole with the reason for each refused event,
so a server that resends the rest knows exactly what the trail holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest

from audit.events import record
from audit.models import AuditEvent, EventReceipt
from policies.models import McpServer
from policies.tokens import TokenLink, link_from_record, server_token_links

MAX_BATCH_EVENTS = 500
MAX_DETAIL_BYTES = 2048
# The events that carry a token's checksum from the moment it was minted: the link that survives
# the token row (DOT deletes access tokens when they are revoked or cleared away).
TOKEN_EVENTS = ("token.issued", "token.refreshed")
RESULT_OUTCOMES = {"success": AuditEvent.Outcome.ALLOW, "error": AuditEvent.Outcome.ERROR}


@dataclass(frozen=True)
class ReportedEvent:
    """One tool-call result as an MCP server reports it, already checked for shape."""

    event_id: str
    token_checksum: str
    tool: str
    action: str
    outcome: str  # "success" or "error"
    duration_ms: int
    arguments_digest: str  # SHA-256 the server computed; the arguments never reach the console
    occurred: datetime  # by the server's clock; the audit event keeps the console's receipt time
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    recorded: list[str]
    duplicates: list[str]


class EventsRefused(Exception):
    """The batch was refused whole and nothing was recorded; ``errors`` says why, by event index."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]) -> None:
        super().__init__(f"{len(errors)} event(s) refused")
        self.errors = errors


def ingest_events(
    server: McpServer, events: list[ReportedEvent], *, request: HttpRequest | None = None
) -> IngestResult:
    """Record a batch of ``server``'s tool-call results, all or none."""
    try:
        with transaction.atomic():
            return _ingest(server, events, request)
    except IntegrityError:
        # A copy of this batch, sent concurrently, took some receipts first. Once it has
        # committed (PostgreSQL made us wait for it), those events are duplicates: try once more.
        with transaction.atomic():
            return _ingest(server, events, request)


def _ingest(server: McpServer, events: list[ReportedEvent], request: HttpRequest | None) -> IngestResult:
    ids = [event.event_id for event in events]
    seen = set(
        EventReceipt.objects.filter(server_id=server.pk, event_id__in=ids).values_list("event_id", flat=True)
    )
    fresh = [(index, event) for index, event in enumerate(events) if event.event_id not in seen]
    links = _token_links(server, {event.token_checksum for _, event in fresh})
    errors: dict[int, dict[str, list[str]]] = {}
    first_index: dict[str, int] = {}
    for index, event in enumerate(events):
        if first_index.setdefault(event.event_id, index) != index:
            errors[index] = {"event_id": ["This event_id appears more than once in the batch."]}
    for index, event in fresh:
        if event.token_checksum not in links:
            # Unknown and foreign tokens read the same: a server learns nothing of other servers'.
            errors.setdefault(index, {})["token"] = ["Not a token issued for this MCP server."]
    if errors:
        raise EventsRefused(errors)
    receipts = []
    for _, event in fresh:
        audit_event = _record_result(server, event, links[event.token_checksum], request)
        receipts.append(
            EventReceipt(server_id=server.pk, event_id=event.event_id, audit_event_id=audit_event.pk)
        )
    EventReceipt.objects.bulk_create(receipts)
    return IngestResult(
        recorded=[event.event_id for _, event in fresh],
        duplicates=[event_id for event_id in ids if event_id in seen],
    )


def _token_links(server: McpServer, checksums: set[str]) -> dict[str, TokenLink]:
    """The links of the tokens bound to ``server`` among ``checksums``, live or gone."""
    links = server_token_links(server, checksums)
    gone = checksums - links.keys()
    if not gone:
        return links
    # The token row is gone: the event that recorded its minting still names who and what.
    minted = AuditEvent.objects.filter(
        event_type__in=TOKEN_EVENTS, token_checksum__in=gone, server_resource=server.resource
    ).order_by("id")
    for event in minted:
        # Discovery tokens (the console listing tools) never carry tool calls to report.
        if event.token_checksum not in links and event.detail.get("purpose") != "tool_discovery":
            links[event.token_checksum] = link_from_record(
                event.delegation_id, event.human_id, event.agent_client_id
            )
    return links


def _record_result(
    server: McpServer, event: ReportedEvent, link: TokenLink, request: HttpRequest | None
) -> AuditEvent:
    detail: dict[str, Any] = {
        "event_id": event.event_id,
        "result": event.outcome,
        "duration_ms": event.duration_ms,
        "arguments_digest": event.arguments_digest,
        "occurred_at_server": event.occurred.isoformat(),
    }
    if event.detail:
        detail["server_detail"] = event.detail
    return record(
        "tool_call.result",
        outcome=RESULT_OUTCOMES[event.outcome],
        reason=event.reason,
        human=link.human,
        agent=link.agent,
        server=server,
        tool=event.tool,
        action=event.action,
        delegation=link.delegation,
        token=link.token,
        # Kept when the token row is gone: it still ties this event to the one that minted the token.
        token_checksum=event.token_checksum,
        request=request,
        detail=detail,
    )
