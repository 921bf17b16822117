"""Export for compliance: the same filter gives the same file through the CLI, the API and the
console's export job; CSV opens safely in a spreadsheet; JSON Lines parses line by line; each
export carries a manifest; bad filters change nothing; only auditors and security admins export."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from audit.chain import latest_checkpoint, seal_pending_events
from audit.events import record
from audit.export import _ISO_SQL, ExportRun, _rendered_lines
from audit.models import AuditEvent, AuditExport
from console.roles import Role
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)
from tests.test_audit_export_fixtures import FORMULA_USERNAME, UTF8_USERNAME, user_with_role


def csv_rows(data: bytes) -> list[dict[str, str]]:
    assert data.startswith("\ufeff".encode()), "CSV starts with a UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def jsonl_rows(data: bytes) -> list[dict]:
    # Split at "\n" only: str.splitlines() also splits at U+2028, U+0085, ... that JSON keeps raw.
    return [json.loads(line) for line in data.decode().split("\n")[:-1]]


def cli_export(tmp_path, fmt: str, *args: str) -> tuple[bytes, dict]:
    output = tmp_path / f"events.{fmt}"
    call_command("export_audit", "--format", fmt, "--output", str(output), *args, stdout=io.StringIO())
    manifest = json.loads((tmp_path / f"events.{fmt}.manifest.json").read_text())
    return output.read_bytes(), manifest


def api_export(client: Client, fmt: str, **filters: str) -> bytes:
    response = client.get("/api/audit/events/export/", {"format": fmt, **filters})
    assert response.status_code == 200, response.content
    assert response.streaming
    return b"".join(response.streaming_content)


def console_export(client: Client, capture, fmt: str, **filters: str) -> tuple[bytes, AuditExport]:
    """Start an export from the console's page (the job runs on commit) and download the file."""
    with capture(execute=True):
        response = client.post("/audit/exports/new/", {"format": fmt, **filters})
    assert response.status_code == 302, response.content
    job = AuditExport.objects.get()
    assert response["Location"] == f"/audit/exports/{job.pk}/"
    status = client.get(f"/api/audit/exports/{job.pk}/").json()
    assert status["status"] == "done", status
    download = client.get(status["download"])
    assert download.status_code == 200
    return b"".join(download.streaming_content), job


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_cli_api_and_console_job_give_the_same_rows_for_the_same_filter(
    fmt, trail, auditor_client, tmp_path, media, django_capture_on_commit_callbacks
):
    cli, manifest = cli_export(tmp_path, fmt, "--human", "alice", "--server", "calendar")
    api = api_export(auditor_client, fmt, human="alice", server="calendar")
    console, job = console_export(
        auditor_client, django_capture_on_commit_callbacks, fmt, human="alice", server="calendar"
    )

    assert cli == api == console
    rows = csv_rows(cli) if fmt == "csv" else jsonl_rows(cli)
    assert [int(row["id"]) for row in rows] == [trail["events"][0].pk, trail["events"][1].pk]
    assert manifest["rows"] == job.manifest["rows"] == job.rows_written == job.rows_total == 2
    assert manifest["sha256"] == job.manifest["sha256"] == hashlib.sha256(cli).hexdigest()


def test_csv_opens_in_a_spreadsheet_with_quoting_utf8_and_formulas_defused(trail, tmp_path):
    data, manifest = cli_export(tmp_path, "csv")

    rows = {row["id"]: row for row in csv_rows(data)}
    first, denied, _, hostile, utf8 = (rows[str(event.pk)] for event in trail["events"])
    assert first["human_username"] == "alice"
    assert first["agent_client_id"] == trail["events"][0].agent_client_id
    assert (first["server_name"], first["tool"], first["action"], first["outcome"]) == (
        "calendar",
        "list_events",
        "read",
        "allow",
    )
    assert json.loads(first["detail"]) == {"note": 'comma, "quotes"\nand a newline'}
    assert (denied["outcome"], denied["reason"]) == ("deny", "scope_missing")
    # A cell a spreadsheet would run as a formula is prefixed with a quote and stays one cell.
    assert hostile["human_username"] == "'" + FORMULA_USERNAME
    assert utf8["human_username"] == UTF8_USERNAME
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    assert (
        manifest["rows"]
        == len(rows)
        == AuditEvent.objects.filter(id__lte=manifest["through_event_id"]).count()
    )


@pytest.mark.parametrize(
    "name", [" =1+1", "\n=1+1", "\uff1d1+1", "\t@SUM(A1)"], ids=["space", "newline", "full-width", "tab"]
)
def test_a_formula_behind_whitespace_or_in_full_width_is_defused_too(name, agent, tmp_path, db):
    agent.name = name
    agent.save()
    record("tool_call.decision", outcome="allow", agent=agent)

    data, _ = cli_export(tmp_path, "csv")

    (row,) = [row for row in csv_rows(data) if row["agent_name"] == "'" + name]
    assert row["agent_client_id"] == agent.client_id


def test_json_lines_parse_line_by_line_with_values_unaltered(trail, tmp_path):
    data, manifest = cli_export(tmp_path, "jsonl")

    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == ""  # every record ends its line
    records = [json.loads(line) for line in lines[:-1]]
    recorded = AuditEvent.objects.filter(id__lte=manifest["through_event_id"]).order_by("id")
    assert [r["id"] for r in records] == list(recorded.values_list("id", flat=True))
    by_id = {r["id"]: r for r in records}
    assert by_id[trail["events"][3].pk]["human_username"] == FORMULA_USERNAME  # JSON needs no guard
    assert by_id[trail["events"][3].pk]["detail"] == {"memo": "=1+1"}
    assert by_id[trail["events"][4].pk]["human_username"] == UTF8_USERNAME
    assert manifest["rows"] == len(records)


def test_the_manifest_names_rows_sha256_filters_and_the_last_event_covered(trail, tmp_path):
    data, manifest = cli_export(tmp_path, "csv", "--outcome", "deny", "--since", "2020-01-01T00:00:00Z")

    assert manifest["rows"] == 2
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["filters"] == {"outcome": "deny", "since": "2020-01-01T00:00:00+00:00"}
    assert manifest["through_event_id"] == trail["events"][-1].pk
    assert manifest["format"] == "csv"
    assert manifest["checkpoint"] is None  # nothing sealed yet


def test_the_manifest_names_the_signed_checkpoint_that_covers_the_rows(trail, tmp_path):
    seal_pending_events()
    checkpoint = latest_checkpoint()
    data, manifest = cli_export(tmp_path, "jsonl", "--human", "alice")

    assert manifest["checkpoint"] == {
        "chain_seq": checkpoint.chain_seq,
        "last_event_id": checkpoint.last_event_id,
        "chain_hash": checkpoint.chain_hash,
        "signature": checkpoint.signature,
        "created": checkpoint.created.isoformat(),
        "covers_all_rows": True,
    }
    assert all(row["chain_hash"] and row["chain_seq"] <= checkpoint.chain_seq for row in jsonl_rows(data))

    record("tool_call.decision", outcome="deny")  # recorded after the seal: not under the checkpoint
    _, unsealed = cli_export(tmp_path, "jsonl")
    assert unsealed["checkpoint"]["covers_all_rows"] is False


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"human": "alice"}, [0, 1, 2]),
        ({"agent": "CLIENT"}, [0, 1, 2, 3, 4]),
        ({"server": "mail"}, [2]),
        ({"tool": "list_events"}, [0, 3]),
        ({"outcome": "deny"}, [1, 3]),
        ({"event_type": "consent.granted"}, [4]),
        ({"human": "alice", "outcome": "deny"}, [1]),
        ({"until": "2020-01-01"}, []),
        ({"since": "2020-01-01", "human": UTF8_USERNAME}, [4]),
    ],
)
def test_each_filter_selects_the_matching_events(args, expected, trail, agent, tmp_path):
    options = []
    for key, value in args.items():
        options += [f"--{key.replace('_', '-')}", agent.client_id if value == "CLIENT" else value]
    data, manifest = cli_export(tmp_path, "jsonl", *options)

    rows = jsonl_rows(data)
    ours = {event.pk for event in trail["events"]}  # other doors record events of their own too
    assert [row["id"] for row in rows if row["id"] in ours] == [trail["events"][i].pk for i in expected]
    columns = {"human": "human_username", "agent": "agent_client_id", "server": "server_name"}
    for key, value in args.items():
        if key not in ("since", "until"):
            wanted = agent.client_id if value == "CLIENT" else value
            assert {row[columns.get(key, key)] for row in rows} <= {wanted}
    assert manifest["rows"] == len(rows)


def test_until_is_exclusive_and_rows_recorded_during_an_export_are_left_out(trail, tmp_path):
    last = trail["events"][-1]
    data, _ = cli_export(tmp_path, "jsonl", "--until", last.occurred.isoformat())
    assert last.pk not in [row["id"] for row in jsonl_rows(data)]

    from audit.export import ExportRun

    run = ExportRun({}, "jsonl")
    late = record("late.event", outcome="allow")  # appended after the export started
    rows = jsonl_rows(b"".join(chunk for chunk, _ in run.chunks()))
    assert trail["events"][-1].pk in [row["id"] for row in rows]
    assert late.pk not in [row["id"] for row in rows]


def test_the_api_streams_the_export_in_batches_of_the_configured_size(trail, auditor_client, settings):
    settings.AUDIT_EXPORT = {**settings.AUDIT_EXPORT, "CHUNK_SIZE": 2}

    response = auditor_client.get("/api/audit/events/export/", {"format": "csv"})

    chunks = list(response.streaming_content)
    total = AuditEvent.objects.filter(id__lte=response["X-Audit-Export-Through-Event"]).count()
    assert len(chunks) == 1 + (total + 1) // 2  # BOM and header, then the rows 2 by 2
    assert response["X-Audit-Export-Rows"] == str(total)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-events-')
    assert len(csv_rows(b"".join(chunks))) == total


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "since"),
        (["--outcome", "maybe"], "outcome"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "'since' must be before 'until'"),
        (["--human", "x" * 151], "human"),
    ],
)
def test_bad_filters_are_a_command_error_and_write_no_file(args, message, trail, tmp_path):
    output = tmp_path / "events.csv"

    with pytest.raises(CommandError, match=message):
        call_command("export_audit", "--format", "csv", "--output", str(output), *args)

    assert list(tmp_path.iterdir()) == []


def test_a_bad_format_or_a_missing_directory_is_a_command_error(trail, tmp_path):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("export_audit", "--format", "xlsx", "--output", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="No such directory"):
        call_command("export_audit", "--format", "csv", "--output", str(tmp_path / "nowhere" / "x.csv"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "query",
    [
        {"format": "xlsx"},
        {"format": "csv", "since": "not-a-time"},
        {"format": "csv", "outcome": "maybe"},
        {"format": "csv", "colour": "red"},
        {},
    ],
)
def test_the_api_answers_bad_export_parameters_with_400(query, trail, auditor_client):
    response = auditor_client.get("/api/audit/events/export/", query)

    assert response.status_code == 400
    assert response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"format": "pdf"},
        {"format": "csv", "filters": {"since": "soon"}},
        {"format": "csv", "filters": {"until": "2020-01-01", "since": "2021-01-01"}},
        {"format": "csv", "filters": {"colour": "red"}},
    ],
)
def test_a_bad_export_job_is_refused_with_400_and_creates_no_job(body, trail, auditor_client):
    response = auditor_client.post("/api/audit/exports/", body, content_type="application/json")

    assert response.status_code == 400
    assert not AuditExport.objects.exists()


def test_the_console_export_page_shows_a_bad_filter_and_creates_no_job(trail, auditor_client):
    response = auditor_client.post("/audit/exports/new/", {"format": "csv", "outcome": "maybe"})

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not AuditExport.objects.exists()


def test_an_export_job_through_the_api_reports_progress_and_a_downloadable_file(
    trail, auditor_client, media, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = auditor_client.post(
            "/api/audit/exports/",
            {"format": "jsonl", "filters": {"outcome": "deny"}},
            content_type="application/json",
        )
    assert response.status_code == 202, response.content
    job = auditor_client.get(response["Location"]).json()

    assert (job["status"], job["rows_written"], job["rows_total"], job["progress"]) == ("done", 2, 2, 1.0)
    download = auditor_client.get(job["download"])
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == job["manifest"]["sha256"] == download["X-Audit-Export-SHA256"]
    assert [row["outcome"] for row in jsonl_rows(data)] == ["deny", "deny"]
    stored = AuditExport.objects.get()
    assert stored.file_path.startswith("exports/")
    assert (media / stored.file_path).exists()


@pytest.mark.parametrize("role", [None, Role.APPROVER])
def test_end_users_and_approvers_can_neither_search_nor_export(
    role, trail, media, django_capture_on_commit_callbacks
):
    auditor = user_with_role("audra", Role.COMPLIANCE_AUDITOR)
    auditors = Client()
    auditors.force_login(auditor)
    with django_capture_on_commit_callbacks(execute=True):
        job_url = auditors.post("/api/audit/exports/", {"format": "csv"}, content_type="application/json")[
            "Location"
        ]
    job_id = AuditExport.objects.get().pk
    someone = Client()
    someone.force_login(user_with_role("eve", role))

    api = [
        someone.get("/api/audit/events/"),
        someone.get("/api/audit/events/export/", {"format": "csv"}),
        someone.post("/api/audit/exports/", {"format": "csv"}, content_type="application/json"),
        someone.get(job_url),
        someone.get(f"/api/audit/exports/{job_id}/download/"),
    ]
    assert [r.status_code for r in api] == [403] * 5
    pages = [someone.get("/audit/exports/new/"), someone.get(f"/audit/exports/{job_id}/")]
    # Not staff: the console's sign-in page; staff without the permission: 403.
    assert [r.status_code for r in pages] == ([302, 302] if role is None else [403, 403])
    assert AuditExport.objects.count() == 1


def test_a_security_admin_may_export(trail):
    admin = Client()
    admin.force_login(user_with_role("sam", Role.SECURITY_ADMIN))

    response = admin.get("/api/audit/events/export/", {"format": "jsonl", "human": "alice"})

    assert response.status_code == 200
    rows = jsonl_rows(b"".join(response.streaming_content))
    assert len(rows) == AuditEvent.objects.filter(human_username="alice").count() >= 3


def test_every_export_is_itself_recorded_with_who_and_which_filters(trail, auditor_client, tmp_path):
    api_export(auditor_client, "csv", outcome="deny")
    _, manifest = cli_export(tmp_path, "jsonl", "--human", "alice")

    api, cli = AuditEvent.objects.filter(event_type="audit.exported").order_by("id")
    assert (api.actor_username, api.detail["door"], api.detail["filters"]) == (
        "audra",
        "api",
        {"outcome": "deny"},
    )
    assert (cli.detail["door"], cli.detail["filters"], cli.detail["sha256"]) == (
        "cli",
        {"human": "alice"},
        manifest["sha256"],
    )


# Cells ``_guarded`` prefixes, cells it leaves alone, and cells CSV must quote or keep apart
# (empty, NULL, backslashes, the COPY end marker).
HOSTILE_CELLS = [
    *("=1", "+1", "-1", "@A1", "\t1", "\r1", "\n1", "\uff1d1", "\uff0b1", "\uff0d1", "\uff201"),
    *(" \t x", " x", "a=b", "'=x", "\\.", "back\\slash", 'say "hi"', "a,b", "x\ny", "zoë-日本", ""),
    *(space + "=1" for space in "".join(map(chr, range(0x3001))) if space.isspace()),
    *(space + "x" for space in " \x0b\x1c\x85\xa0\u2028\u3000"),
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_postgresql_renders_each_row_as_the_python_renderer_does(fmt, db):
    for value in HOSTILE_CELLS:
        record(
            "test.hostile_cells",
            outcome="deny",
            reason=value,
            tool=value,
            action=value,
            detail={
                "value": value,
                "escapes": 'back\\slash "quoted"\nnew line\t\u2028 ü 日本 \x01',
                "n": [1.5, None],
            },
        )
    run = ExportRun({"event_type": "test.hostile_cells"}, fmt)

    copied = b"".join(chunk for chunk, _ in run.chunks())
    rendered = b"".join(_rendered_lines(run))

    if fmt == "csv":
        header = copied[: copied.index(b"\r\n") + 2]
        copied_rows, rendered_rows = csv_rows(copied), csv_rows(header + rendered)
        for row in copied_rows + rendered_rows:  # JSON cells: jsonb's key order and spacing
            row["actors"], row["detail"] = json.loads(row["actors"]), json.loads(row["detail"])
        tools = [row["tool"] for row in copied_rows]
        triggers = {"=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20"}
        defused = [v.startswith(("\t", "\r", "\n")) or v.lstrip()[:1] in triggers for v in HOSTILE_CELLS]
        assert tools == ["'" + v if bad else v for v, bad in zip(HOSTILE_CELLS, defused, strict=True)]
    else:
        copied_rows, rendered_rows = jsonl_rows(copied), jsonl_rows(rendered)
        assert [row["tool"] for row in copied_rows] == HOSTILE_CELLS
        assert copied.count(b"\n") == len(HOSTILE_CELLS)
    assert copied_rows == rendered_rows
    assert copied_rows[0]["detail"]["escapes"] == 'back\\slash "quoted"\nnew line\t\u2028 ü 日本 \x01'


def test_postgresql_writes_timestamps_as_isoformat_does(db):
    times = [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    ]
    with connection.cursor() as cursor:
        for moment in times:
            cursor.execute("SELECT " + _ISO_SQL.format(c="%(t)s::timestamptz"), {"t": moment})
            assert cursor.fetchone()[0] == moment.astimezone(UTC).isoformat()
