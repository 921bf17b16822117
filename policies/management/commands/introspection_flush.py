"""Void every cached introspection answer: after a change that sent no signal (raw SQL, dbshell,
a data migration on historical models), which the cache would otherwise serve for up to
INTROSPECTION_CACHE_SECONDS."""

from django.core.management.base import BaseCommand

from policies.introspection import introspection_changed


class Command(BaseCommand):
    help = "Void every cached introspection answer (after raw SQL or a data migration)."

    def handle(self, *args, **options) -> None:
        # Redis unreachable: an introspection.cache_distrusted event keeps old answers unserved.
        introspection_changed()
        self.stdout.write("Cached introspection answers voided.")
