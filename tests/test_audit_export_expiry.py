"""Export files are copies of the trail: AUDIT_EXPORT_KEEP_HOURS after the job finished the beat task
deletes the file, keeps the job and its manifest, and records the deletion; the download then
answers 410 Gone and the progress page says the file expired."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from audit.models import AuditEvent, AuditExport
from audit.tasks import expire_audit_export_files
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)


@pytest.fixture
def finished_export(trail, auditor_client, media, django_capture_on_commit_callbacks):
    """Start an export through the API (the task runs on commit), then date its end ``hours`` ago."""

    def finished(hours: float) -> AuditExport:
        with django_capture_on_commit_callbacks(execute=True):
            response = auditor_client.post(
                "/api/audit/exports/", {"format": "csv"}, content_type="application/json"
            )
        assert response.status_code == 202, response.content
        job = AuditExport.objects.get(pk=response.json()["id"])
        assert job.status == AuditExport.Status.DONE and (media / job.file_path).exists()
        AuditExport.objects.filter(pk=job.pk).update(finished=timezone.now() - timedelta(hours=hours))
        job.refresh_from_db()
        return job

    return finished


def expire() -> int:
    return expire_audit_export_files.apply().get()


def expiry_events():
    return AuditEvent.objects.filter(event_type="audit.export_expired")


def test_an_old_export_file_is_deleted_its_job_and_manifest_kept_and_the_deletion_recorded(
    finished_export, media
):
    job = finished_export(25)
    path, manifest = job.file_path, job.manifest

    assert expire() == 1

    assert not (media / path).exists()
    job.refresh_from_db()
    assert (job.status, job.file_path, job.manifest) == (AuditExport.Status.DONE, "", manifest)
    assert manifest["rows"] > 0 and manifest["sha256"]
    event = expiry_events().get()
    assert event.outcome == "allow"
    assert event.detail["job"] == str(job.pk)
    assert (event.detail["file"], event.detail["sha256"], event.detail["rows"]) == (
        path,
        manifest["sha256"],
        manifest["rows"],
    )
    assert expire() == 0  # a second run finds nothing left to delete
    assert expiry_events().count() == 1


@pytest.mark.parametrize(
    ("keep_hours", "age_hours", "deleted"), [(24, 23, False), (24, 25, True), (1, 0.5, False), (1, 2, True)]
)
def test_only_files_older_than_the_configured_keep_period_are_deleted(
    keep_hours, age_hours, deleted, finished_export, media, settings
):
    settings.AUDIT_EXPORT_KEEP_HOURS = keep_hours
    job = finished_export(age_hours)

    assert expire() == int(deleted)

    assert (media / job.file_path).exists() is not deleted
    job.refresh_from_db()
    assert bool(job.file_path) is not deleted
    assert expiry_events().count() == int(deleted)


@pytest.mark.parametrize("status", [AuditExport.Status.RUNNING, AuditExport.Status.FAILED])
def test_running_and_failed_jobs_are_left_alone_however_old(status, auditor, media):
    path = default_storage.save("exports/partial.csv", ContentFile(b"id\n1\n"))
    old = timezone.now() - timedelta(days=30)
    job = AuditExport.objects.create(requested_by=auditor, format="csv", status=status, file_path=path)
    AuditExport.objects.filter(pk=job.pk).update(created=old, finished=old)

    assert expire() == 0

    assert (media / path).exists()
    job.refresh_from_db()
    assert (job.status, job.file_path) == (status, path)
    assert not expiry_events().exists()


def test_a_file_already_missing_from_storage_still_ends_expired_with_its_event(finished_export, media):
    # As after a run that deleted the file but failed before clearing file_path.
    job = finished_export(25)
    (media / job.file_path).unlink()

    assert expire() == 1

    job.refresh_from_db()
    assert job.file_path == ""
    assert expiry_events().get().detail["job"] == str(job.pk)


def test_downloading_an_expired_export_is_410_gone_with_a_json_error(finished_export, auditor_client):
    job = finished_export(25)
    download_url = auditor_client.get(f"/api/audit/exports/{job.pk}/").json()["download"]
    expire()

    response = auditor_client.get(download_url)

    assert response.status_code == 410
    assert response.json() == {
        "detail": "The export file has expired and was deleted; the job's manifest remains."
    }
    status = auditor_client.get(f"/api/audit/exports/{job.pk}/").json()
    assert (status["status"], status["expired"], status["download"]) == ("done", True, None)
    assert status["manifest"] == job.manifest


def test_a_download_whose_file_vanished_is_410_not_a_server_error(finished_export, auditor_client, media):
    job = finished_export(1)
    (media / job.file_path).unlink()

    response = auditor_client.get(f"/api/audit/exports/{job.pk}/download/")

    assert response.status_code == 410
    assert "expired" in response.json()["detail"]


def test_the_progress_page_says_the_file_expired_instead_of_offering_the_download(
    finished_export, auditor_client
):
    job = finished_export(25)
    before = auditor_client.get(f"/audit/exports/{job.pk}/").content.decode()
    expire()

    after = auditor_client.get(f"/audit/exports/{job.pk}/")

    assert '<div id="export-expired" hidden>' in before
    assert after.status_code == 200
    page = after.content.decode()
    assert '<div id="export-expired" >' in page
    assert "The export file has expired" in page
    assert job.manifest["sha256"] in page


def test_celery_beat_runs_the_expiry_task_hourly(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["expire-audit-export-files"]
    assert entry == {"task": expire_audit_export_files.name, "schedule": 3600.0}
