"""Celery tasks of the audit app."""

from celery import shared_task

from audit.export.jobs import ExportBusy, run_export_job
from audit.retention import RetentionBusy, apply_retention

# A task whose worker dies (killed, out of memory, node lost) runs again instead of being lost:
# acks_late acknowledges the message only once the task has run, reject_on_worker_lost puts it back
# when the pool process running it dies. So these tasks must be idempotent, and they are: see
# audit.export.jobs and audit.retention. While the dead attempt's database session still holds the
# job's lock, the new attempt waits and retries (backing off, for a few minutes at most).
REDELIVERED_IF_WORKER_DIES = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 8,
}


@shared_task(ignore_result=True, autoretry_for=(ExportBusy,), **REDELIVERED_IF_WORKER_DIES)
def run_export(job_id: str) -> None:
    """Run one export job (audit.export.jobs)."""
    run_export_job(job_id)


@shared_task(ignore_result=True)
def seal_audit_events() -> int:
    """Chain the events committed since the last run and sign a checkpoint (audit.chain)."""
    from audit.chain import seal_pending_events

    return seal_pending_events()


@shared_task(ignore_result=True, autoretry_for=(RetentionBusy,), **REDELIVERED_IF_WORKER_DIES)
def apply_audit_retention() -> int:
    """Delete expired, checkpointed events outside legal holds (audit.retention)."""
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
