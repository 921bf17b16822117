"""Chain the audit events committed since the last sealing and sign a checkpoint."""

from django.core.management.base import BaseCommand

from audit.chain import seal_pending_events


class Command(BaseCommand):
    help = "Seal pending audit events into the hash chain and write a signed checkpoint."

    def handle(self, *args, **options) -> None:
        sealed = seal_pending_events()
        self.stdout.write(f"sealed {sealed} events")
