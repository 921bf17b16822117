"""`make bench` at toy sizes, end to end, so the benchmark does not rot between full runs.

The real gunicorn, wrk, the open-loop generator, the revocation check and the export all run,
against the test database (at a few hundred rows and one second per scenario). Nothing here is
timed: the test checks that every row of the report is there and well formed, and that no
introspection answered "active" after its token's revocation returned.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {"rps", "p50_ms", "p99_ms", "requests", "bad_status", "socket_errors", "statuses"}

pytestmark = [
    # The mark makes pytest-django create the test database (the benchmark writes into it, from
    # other processes, so no test transaction may hide the rows); it is flushed after each test.
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("wrk") is None, reason="wrk is not installed (.ci/run and `make bench` install it)"
    ),
    pytest.mark.timeout(240),
]


def database_url() -> str:
    s = connection.settings_dict
    assert s["NAME"].startswith("test_"), f"not a test database: {s['NAME']}"
    password = f":{quote(s['PASSWORD'])}" if s.get("PASSWORD") else ""
    address = f"{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
    return f"postgres://{quote(s['USER'])}{password}@{address}/{s['NAME']}"


@pytest.fixture(scope="module")
def report(django_db_setup, django_db_blocker, tmp_path_factory) -> tuple[dict, str]:
    """One run of the smoke profile on the test database (flushed afterwards): JSON and Markdown."""
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    with django_db_blocker.unblock():
        url = database_url()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": url,
        "REDIS_URL": os.environ["REDIS_URL"],
    }
    command = [sys.executable, "-m", "bench", "--profile", "smoke", "--external-services", "--workers", "1"]
    try:
        done = subprocess.run(
            [*command, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=200
        )
        assert done.returncode == 0, done.stdout + done.stderr
        yield json.loads(out.with_suffix(".json").read_text()), out.read_text()
    finally:
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


def test_the_benchmark_writes_every_figure_goal_and_machine_detail(report):
    summary, markdown = report

    assert set(summary["phases"]["A"]) == {
        "floor",
        "live",
        "live_uncached",
        "live_async_commit",
        "revoked",
        "expired",
        "foreign",
        "unknown",
        "dot",
    }
    assert set(summary["phases"]["T"]) == {"floor", "refresh", "ours_cc", "ingest", "dot_cc"}
    assert set(summary["phases"]["B"]) == set(summary["phases"]["C"]) == {"floor", "live"}
    for phase in summary["phases"].values():
        for figures in phase.values():
            assert set(figures["median"]) == FIGURES
            assert len(figures["runs"]) == summary["settings"]["rounds"]
    assert {e["rows"] for e in summary["export"].values()} == {summary["settings"]["export_events"]}
    assert set(summary["export"]) == {"csv", "jsonl"}
    assert summary["half_rate"]["sent"] > 0
    assert len(summary["goals"]) == 8
    assert {goal["status"] for goal in summary["goals"]} <= {"pass", "short"}
    for key in ("cpu_model", "cores", "memory_gb", "kernel", "python", "django", "postgres", "git_commit"):
        assert summary["machine"][key], key
    for heading in ("## Goals", "## Introspection", "## Token endpoint", "## Scale", "## Audit export"):
        assert heading in markdown
    assert markdown.count("| **pass** |") + markdown.count("| **short** |") == 8


def test_no_introspection_says_active_after_its_revocation_returned(report):
    summary, _ = report

    revocation = summary["revocation"]
    assert revocation["revoked"] > 0
    assert revocation["errors"] == 0
    assert revocation["stale"] == 0
