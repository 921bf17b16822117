"""Celery tasks of the audit app."""

from celery import shared_task


@shared_task(ignore_result=True)
def run_export(job_id: str) -> None:
    """Run one export job (audit.export.jobs)."""
    from audit.export.jobs import run_export_job

    run_export_job(job_id)


@shared_task(ignore_result=True)
def seal_audit_events() -> int:
    """Chain the events committed since the last run and sign a checkpoint (audit.chain)."""
    from audit.chain import seal_pending_events

    return seal_pending_events()


@shared_task(ignore_result=True)
def apply_audit_retention() -> int:
    """Delete expired, checkpointed events outside legal holds (audit.retention)."""
    from audit.retention import apply_retention

    return apply_retention()


@shared_task(ignore_result=True)
def ensure_audit_partitions() -> list[str]:
    """Keep the monthly partitions of the events table a few months ahead (audit.partitions)."""
    from audit.partitions import ensure_partitions

    return ensure_partitions()


@shared_task(ignore_result=True)
def expire_audit_export_files() -> int:
    """Delete export files older than AUDIT_EXPORT_KEEP_HOURS; jobs and manifests stay (audit.export.jobs)."""
    from audit.export.jobs import expire_export_files

    return expire_export_files()
