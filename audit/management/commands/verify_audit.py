"""Check the audit hash chain and its signed checkpoints; exit 1 where it breaks."""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail: recompute the hash chain and check every checkpoint signature."

    def handle(self, *args, **options) -> None:
        result = verify_chain()
        if not result.ok:
            raise CommandError(f"audit chain BROKEN at event {result.broken_at_event_id}: {result.message}")
        self.stdout.write(self.style.SUCCESS(result.message))
