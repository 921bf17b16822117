"""Export jobs: large exports run in a Celery worker, with progress, and a file to download.

The file goes to ``default_storage`` under ``AUDIT_EXPORT["PREFIX"]``; it is written to a local
temporary file first, so a failed job leaves no half-written export behind.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from audit.export import ExportRun, check_format, export_events, filters_as_json, parse_filters, record_export
from audit.models import AuditExport

logger = logging.getLogger(__name__)


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


def run_export_job(job_id: str) -> AuditExport:
    """Write the job's file, updating ``rows_written`` as it goes; the job ends done or failed."""
    job = AuditExport.objects.get(pk=job_id)
    if job.status != AuditExport.Status.QUEUED:
        return job  # a task delivered twice runs once
    try:
        run = ExportRun(parse_filters(job.filters), job.format)
        _update(job, status=AuditExport.Status.RUNNING, rows_total=run.count())
        with tempfile.TemporaryFile() as spool:
            manifest = export_events(
                {}, job.format, spool, run=run, on_progress=lambda rows: _update(job, rows_written=rows)
            )
            spool.seek(0)
            prefix = settings.AUDIT_EXPORT.get("PREFIX", "exports/")
            path = default_storage.save(f"{prefix}{job.pk}.{job.format}", File(spool))
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


def open_export_file(job: AuditExport):
    """The finished job's file, opened for reading (binary)."""
    return default_storage.open(job.file_path, "rb")
