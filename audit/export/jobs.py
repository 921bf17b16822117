"""Export jobs: large exports run in a Celery worker, with progress, and a file to download.

The file goes to ``default_storage`` under ``AUDIT_EXPORT["PREFIX"]``; it is written to a local
temporary file first, so a failed job leaves no half-written export behind. The file is a copy of
the trail, so it is deleted ``AUDIT_EXPORT_KEEP_HOURS`` after the job finished; the job row and its
manifest stay as the record of what was exported (an expired job is done with no ``file_path``).

A job survives its worker dying: the task is delivered again (audit.tasks), and an attempt that
finds the job queued or running (its first attempt died) writes the file again from the start,
while a session advisory lock per job keeps two live attempts apart. The job ends done and its
``audit.exported`` event is recorded in one transaction, so an attempt that dies in between leaves
neither.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from audit.chain import try_advisory_lock
from audit.events import record
from audit.export import ExportRun, check_format, export_events, filters_as_json, parse_filters, record_export
from audit.models import AuditExport

logger = logging.getLogger(__name__)

EXPIRED_EVENT = "audit.export_expired"


class ExportFileGone(Exception):
    """The job's file was deleted after AUDIT_EXPORT_KEEP_HOURS (or is missing from storage)."""


class ExportBusy(Exception):
    """Another attempt holds the job (or the session of an attempt whose worker died lingers)."""


def start_export(filters: Mapping[str, Any], fmt: str, *, by) -> AuditExport:
    """Check the filters, create the job and queue it. Raises ExportError before creating anything."""
    from audit.tasks import run_export

    parsed = parse_filters(filters)
    job = AuditExport.objects.create(
        requested_by=by, format=check_format(fmt), filters=filters_as_json(parsed)
    )
    # After commit: the worker must find the job row.
    transaction.on_commit(lambda: run_export.delay(str(job.pk)))
    return job


def _job_lock(job_id: str) -> int:
    """The advisory lock key of one job: 64 bits of a hash of its id."""
    return int.from_bytes(hashlib.sha256(f"audit-export:{job_id}".encode()).digest()[:8], "big", signed=True)


def run_export_job(job_id: str) -> AuditExport:
    """Write the job's file, updating ``rows_written`` as it goes; the job ends done or failed.

    Raises ExportBusy while another attempt holds the job.
    """
    with try_advisory_lock(_job_lock(job_id), session=True) as locked:
        if not locked:
            raise ExportBusy(job_id)
        job = AuditExport.objects.get(pk=job_id)
        if job.status not in (AuditExport.Status.QUEUED, AuditExport.Status.RUNNING):
            return job  # a task delivered again after its job ended runs once
        return _run(job)


def _run(job: AuditExport) -> AuditExport:
    try:
        run = ExportRun(parse_filters(job.filters), job.format)
        _update(job, status=AuditExport.Status.RUNNING, rows_total=run.count(), rows_written=0)
        with tempfile.TemporaryFile() as spool:
            manifest = export_events(
                {}, job.format, spool, run=run, on_progress=lambda rows: _update(job, rows_written=rows)
            )
            spool.seek(0)
            prefix = settings.AUDIT_EXPORT.get("PREFIX", "exports/")
            name = f"{prefix}{job.pk}.{job.format}"
            # The file of an attempt that died before marking the job done: replaced, not kept
            # beside the new one under another name.
            default_storage.delete(name)
            path = default_storage.save(name, File(spool))
        with transaction.atomic():
            _update(
                job,
                status=AuditExport.Status.DONE,
                rows_written=manifest["rows"],
                file_path=path,
                manifest=manifest,
                finished=timezone.now(),
            )
            record_export(
                run,
                door="job",
                rows=manifest["rows"],
                by=job.requested_by,
                sha256=manifest["sha256"],
                job=str(job.pk),
            )
    except Exception as error:
        logger.exception("audit export %s failed", job.pk)
        _update(job, status=AuditExport.Status.FAILED, error=str(error)[:1000], finished=timezone.now())
    return job


def _update(job: AuditExport, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(job, name, value)
    AuditExport.objects.filter(pk=job.pk).update(**fields)


def file_expired(job: AuditExport) -> bool:
    """A done job whose file was deleted: only its manifest remains."""
    return job.status == AuditExport.Status.DONE and not job.file_path


def open_export_file(job: AuditExport):
    """The finished job's file, opened for reading (binary); ExportFileGone once it expired."""
    if file_expired(job):
        raise ExportFileGone(job.pk)
    try:
        return default_storage.open(job.file_path, "rb")
    except FileNotFoundError as error:
        # Between expire_export_files deleting the file and clearing file_path.
        raise ExportFileGone(job.pk) from error


def expire_export_files() -> int:
    """Delete the files of jobs finished more than AUDIT_EXPORT_KEEP_HOURS ago; return how many.

    One transaction per job: the file is deleted, ``file_path`` cleared and an audit event recorded.
    If the transaction fails after the delete, the next run finds the path set and finishes the job
    (deleting a missing file is a no-op), so every deleted file ends with its event.
    """
    cutoff = timezone.now() - timedelta(hours=settings.AUDIT_EXPORT_KEEP_HOURS)
    done = AuditExport.objects.filter(status=AuditExport.Status.DONE)
    old = done.filter(finished__lt=cutoff).exclude(file_path="")
    expired = 0
    for job_id in old.values_list("pk", flat=True):
        with transaction.atomic():
            # skip_locked: a second run at the same time leaves this job to the first.
            job = old.select_for_update(skip_locked=True).filter(pk=job_id).first()
            if job is None:
                continue
            path = job.file_path
            default_storage.delete(path)
            _update(job, file_path="")
            record(
                EXPIRED_EVENT,
                outcome="allow",
                detail={
                    "job": str(job.pk),
                    "file": path,
                    "format": job.format,
                    "rows": job.manifest.get("rows"),
                    "sha256": job.manifest.get("sha256"),
                    "finished": job.finished.isoformat(),
                    "keep_hours": settings.AUDIT_EXPORT_KEEP_HOURS,
                },
            )
        expired += 1
    return expired
