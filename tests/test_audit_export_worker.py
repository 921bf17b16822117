"""A real Celery worker (consuming from Redis, writing to the test database) runs an export job to
completion; the file it stored is the one the manifest describes."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from django.test import Client

from audit.models import AuditEvent, AuditExport
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)

pytestmark = pytest.mark.timeout(180)


def wait_for_job(client: Client, url: str, deadline_seconds: float = 90) -> dict:
    """Poll the job's status as the console's progress page does, until it ends."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"the export job did not finish: {job}")


def test_a_celery_worker_runs_an_export_job_and_the_download_matches_its_manifest(
    media, celery_worker, trail, auditor_client
):
    response = auditor_client.post(
        "/api/audit/exports/",
        {"format": "jsonl", "filters": {"human": "alice"}},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"

    job = wait_for_job(auditor_client, response["Location"])

    assert job["status"] == "done", job["error"]
    download = auditor_client.get(job["download"])
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == job["manifest"]["sha256"]
    rows = [json.loads(line) for line in data.decode().splitlines()]
    expected = list(
        AuditEvent.objects.filter(human_username="alice").order_by("id").values_list("id", flat=True)
    )
    assert [row["id"] for row in rows] == expected
    assert job["rows_written"] == job["rows_total"] == job["manifest"]["rows"] == len(expected)
    assert job["manifest"]["filters"] == {"human": "alice"}
    stored = AuditExport.objects.get()
    assert (media / stored.file_path).read_bytes() == data
