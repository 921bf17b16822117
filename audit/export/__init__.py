"""Export of the audit trail for compliance: CSV and JSON Lines, streamed, with a manifest.

Every door (``manage.py export_audit``, the API, the console's export jobs) goes through
``export_events`` or ``stream_export`` with filters checked by ``parse_filters``, so the same
filter gives the same rows everywhere. Rows come in id order through a server-side cursor:
memory stays flat whatever the size of the trail.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

from django import forms
from django.conf import settings
from django.db import connection, models
from django.db.models import Max, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audit.chain import latest_checkpoint
from audit.events import record
from audit.models import AuditEvent

FORMATS = ("csv", "jsonl")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}

# The exported columns, in file order.
COLUMNS = [
    "id",
    "occurred",
    "event_type",
    "outcome",
    "reason",
    "actor_id",
    "actor_username",
    "human_id",
    "human_username",
    "agent_client_id",
    "agent_name",
    "actors",
    "server_name",
    "server_resource",
    "tool",
    "action",
    "delegation_id",
    "token_id",
    "token_checksum",
    "client_ip",
    "user_agent",
    "correlation_id",
    "detail",
    "chain_seq",
    "chain_hash",
]
# Filter key -> the event column it matches exactly.
EXACT_FILTERS = {
    "human": "human_username",
    "agent": "agent_client_id",
    "server": "server_name",
    "tool": "tool",
    "outcome": "outcome",
    "event_type": "event_type",
}
FILTER_KEYS = ("since", "until", *EXACT_FILTERS)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection), also after
# leading spaces or line breaks, and some take the full-width forms too.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


class ExportError(ValueError):
    """Filters or format that cannot be exported; the message says which and why."""


class EventFilterForm(forms.Form):
    """The filters every door accepts. ``since`` is inclusive, ``until`` exclusive (ISO 8601)."""

    since = forms.DateTimeField(required=False, help_text="From this time (inclusive), ISO 8601.")
    until = forms.DateTimeField(required=False, help_text="Up to this time (exclusive), ISO 8601.")
    human = forms.CharField(required=False, max_length=150, help_text="The human's username.")
    agent = forms.CharField(required=False, max_length=255, help_text="The agent's client_id.")
    server = forms.CharField(required=False, max_length=100, help_text="The MCP server's name.")
    tool = forms.CharField(required=False, max_length=100)
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEvent.Outcome.choices])
    event_type = forms.CharField(required=False, max_length=64)

    def clean_since(self) -> datetime | None:
        return _in_utc(self.cleaned_data["since"])

    def clean_until(self) -> datetime | None:
        return _in_utc(self.cleaned_data["until"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("'since' must be before 'until'.")
        return cleaned


def _in_utc(value: datetime | None) -> datetime | None:
    """ISO 8601 allows UTC offsets up to ±23:59 and PostgreSQL only up to ±15:59 (a 500 once,
    found by tests/fuzz): compare in UTC."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise forms.ValidationError("Out of the supported range of dates.") from None


def _error_text(form: forms.Form) -> str:
    return "; ".join(
        f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
        for field, messages in form.errors.items()
    )


def parse_filters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check raw filters (strings or values); returns only the given ones, typed. Raises ExportError."""
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise ExportError(f"Unknown filter(s): {', '.join(unknown)}. Known: {', '.join(FILTER_KEYS)}.")
    data = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in raw.items()}
    form = EventFilterForm(data)
    if not form.is_valid():
        raise ExportError(_error_text(form))
    return {key: value for key, value in form.cleaned_data.items() if value not in (None, "")}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    return fmt


def events_matching(filters: Mapping[str, Any]) -> QuerySet[AuditEvent]:
    """The events that parsed ``filters`` select, in id (insertion) order."""
    events = AuditEvent.objects.all()
    if filters.get("since"):
        events = events.filter(occurred__gte=filters["since"])
    if filters.get("until"):
        events = events.filter(occurred__lt=filters["until"])
    for key, column in EXACT_FILTERS.items():
        if filters.get(key):
            events = events.filter(**{column: filters[key]})
    return events.order_by("id")


def filters_as_json(filters: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value for key, value in filters.items()
    }


def _chunk_size() -> int:
    return getattr(settings, "AUDIT_EXPORT", {}).get("CHUNK_SIZE", 2000)


class ExportRun:
    """One export: its filters, its format and the last event id it may include.

    The upper id bound is fixed when the run is made, so rows appended while it streams (the trail
    grows all the time) are left out. ``count()`` is taken before streaming: an event with a lower id
    whose transaction commits in between is written but was not counted, so the manifest's ``rows``
    (what was written) is the figure to trust; ``count()`` only drives progress and headers.
    """

    def __init__(self, filters: Mapping[str, Any], fmt: str):
        self.fmt = check_format(fmt)
        self.filters = dict(filters)
        self.through_event_id = AuditEvent.objects.aggregate(last=Max("id"))["last"] or 0
        self.events = events_matching(self.filters).filter(id__lte=self.through_event_id)

    def count(self) -> int:
        return self.events.count()

    def chunks(self, *, copy: bool = True) -> Iterator[tuple[bytes, int]]:
        """(bytes, rows in them), a batch at a time; the first chunk of a CSV is the BOM and header.

        ``copy=False`` renders in Python: a caller that queries the database between chunks (job
        progress) must, since the connection is busy until a COPY ends (psycopg blocks)."""
        if self.fmt == "csv":
            yield "\ufeff".encode() + _csv_batch([COLUMNS], guard=False), 0
        copied = copy and connection.vendor == "postgresql"
        lines = _copied_lines(self) if copied else _rendered_lines(self)
        batch: list[bytes] = []
        size = _chunk_size()
        for line in lines:
            batch.append(line)
            if len(batch) == size:
                yield b"".join(batch), len(batch)
                batch = []
        if batch:
            yield b"".join(batch), len(batch)

    def manifest(self, rows: int, sha256: str) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "rows": rows,
            "sha256": sha256,
            "filters": filters_as_json(self.filters),
            "generated": timezone.now().isoformat(),
            "through_event_id": self.through_event_id,
            "columns": COLUMNS,
            "checkpoint": _checkpoint_covered(self.events),
        }


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _guarded(value: Any) -> Any:
    if isinstance(value, str) and (
        value.startswith(FORMULA_TRIGGERS) or value.lstrip().startswith(FORMULA_TRIGGERS)
    ):
        return "'" + value
    return value


def _csv_batch(rows: list, guard: bool = True) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        cells = [_cell(value) for value in row]
        writer.writerow([_guarded(cell) for cell in cells] if guard else cells)
    return buffer.getvalue().encode()


def _jsonl_line(row: tuple) -> bytes:
    """As PostgreSQL's row_to_json writes it: compact at the top, jsonb's ", " and ": " inside."""
    fields = (
        f"{json.dumps(column)}:"
        + json.dumps(value.isoformat() if isinstance(value, datetime) else value, ensure_ascii=False)
        for column, value in zip(COLUMNS, row, strict=True)
    )
    return ("{" + ",".join(fields) + "}\n").encode()


def _rendered_lines(run: ExportRun) -> Iterator[bytes]:
    """Each row rendered in Python: the path for SQLite (``make run``), which has no COPY."""
    render = (lambda row: _csv_batch([row])) if run.fmt == "csv" else _jsonl_line
    for row in run.events.values_list(*COLUMNS).iterator(chunk_size=_chunk_size()):
        yield render(row)


# What ``_guarded``'s lstrip() skips before a formula trigger: Python's str.isspace().
_WHITESPACE = "".join(char for char in map(chr, range(0x110000)) if char.isspace())
# ``_guarded`` as a PostgreSQL regular expression (literal characters in the brackets, "-" last):
# a trigger first (tab, CR and LF are whitespace too), or one behind leading whitespace.
GUARD_PATTERN = "^([\t\r\n]|[" + _WHITESPACE + "]*[=+@\uff1d\uff0b\uff0d\uff20-])"
# timestamptz as datetime.isoformat() writes a UTC time: microseconds only when not zero.
_ISO_SQL = (
    "replace(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), '.000000+', '+')"
)
# The first character of nearly every cell is a letter or digit: ascii() (its code point) is
# cheap, a regular expression match is not, so only the rest go through GUARD_PATTERN.
_MAY_NEED_GUARD_SQL = "(ascii({c}) < 48 OR ascii({c}) IN (61, 64) OR ascii({c}) > 127) AND {c} ~ %s"


def _column_sql(name: str, fmt: str) -> tuple[str, list[str]]:
    """One exported column rendered by PostgreSQL as the Python path renders it."""
    field = AuditEvent._meta.get_field(name)
    column = connection.ops.quote_name(field.column)
    if isinstance(field, models.DateTimeField):
        return _ISO_SQL.format(c=column), []
    if fmt == "csv" and isinstance(field, models.JSONField):
        return f"{column}::text", []
    if fmt == "csv" and isinstance(field, models.CharField):
        # Python's csv writes "" and None alike (an empty cell) where COPY quotes "": NULLIF.
        guard = _MAY_NEED_GUARD_SQL.format(c=column)
        guarded = f"CASE WHEN {guard} THEN '''' || {column} ELSE NULLIF({column}, '') END"
        return guarded, [GUARD_PATTERN]
    return column, []


def _copied_lines(run: ExportRun) -> Iterator[bytes]:
    """The rows rendered by PostgreSQL (COPY ... TO STDOUT), one per CopyData message: guard,
    timestamps and JSON are done in SQL, not cell by cell in Python."""
    # Only our own constant SQL and column names; filter values stay parameters.
    rendered = {f"export_{name}": RawSQL(*_column_sql(name, run.fmt)) for name in COLUMNS}  # noqa: S611
    select, params = run.events.annotate(**rendered).values_list(*rendered).query.sql_with_params()
    if run.fmt == "csv":
        statement = f"COPY ({select}) TO STDOUT (FORMAT csv)"
    else:
        # One JSON text per row. CSV format with a delimiter and quote that JSON text never holds
        # raw (it \u-escapes control characters) writes it verbatim; text format would double
        # every backslash.
        statement = (
            f"COPY (SELECT row_to_json(e)::text FROM ({select}) AS e({', '.join(COLUMNS)})) "  # noqa: S608
            "TO STDOUT (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
        )
    # The psycopg cursor itself: Django's debug wrapper's copy() takes no parameters.
    with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        for line in copy:
            # COPY ends a CSV row with LF, Python's csv (and RFC 4180) with CRLF.
            yield bytes(line[:-1]) + b"\r\n" if run.fmt == "csv" else bytes(line)


def _checkpoint_covered(events: QuerySet[AuditEvent]) -> dict[str, Any] | None:
    """The latest signed chain checkpoint, and whether every exported row is chained under it.

    Chain order is sealing order (``chain_seq``), so coverage is by position, not by id.
    """
    checkpoint = latest_checkpoint()
    if checkpoint is None:
        return None
    uncovered = events.filter(Q(chain_seq__isnull=True) | Q(chain_seq__gt=checkpoint.chain_seq))
    return {
        "chain_seq": checkpoint.chain_seq,
        "last_event_id": checkpoint.last_event_id,
        "chain_hash": checkpoint.chain_hash,
        "signature": checkpoint.signature,
        "created": checkpoint.created.isoformat(),
        "covers_all_rows": not uncovered.exists(),
    }


def export_events(
    filters: Mapping[str, Any],
    fmt: str,
    out: BinaryIO,
    *,
    on_progress: Callable[[int], None] | None = None,
    run: ExportRun | None = None,
) -> dict[str, Any]:
    """Write the events matching ``filters`` to ``out`` as ``fmt``; returns the manifest.

    ``filters`` are raw (strings) or parsed; ``on_progress(rows_written)`` is called per batch.
    """
    run = run or ExportRun(parse_filters(filters), fmt)
    digest, rows = hashlib.sha256(), 0
    for data, count in run.chunks(copy=on_progress is None):
        out.write(data)
        digest.update(data)
        rows += count
        if count and on_progress:
            on_progress(rows)
    return run.manifest(rows, digest.hexdigest())


def record_export(run: ExportRun, *, door: str, rows: int, by=None, request=None, **detail: Any) -> None:
    """An export is itself an audit event: who took which part of the trail, and where."""
    record(
        "audit.exported",
        outcome="allow",
        actor=by,
        request=request,
        detail={
            "door": door,
            "format": run.fmt,
            "filters": filters_as_json(run.filters),
            "rows": rows,
            **detail,
        },
    )


def stream_export(run: ExportRun) -> Iterator[bytes]:
    """The export's bytes, for a streaming HTTP response."""
    for data, _count in run.chunks():
        yield data


def file_name(fmt: str, generated: datetime | None = None) -> str:
    return f"audit-events-{(generated or timezone.now()):%Y%m%dT%H%M%SZ}.{fmt}"
