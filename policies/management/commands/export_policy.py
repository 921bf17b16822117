"""``manage.py export_policy``: write the console's policy in the shape apply_policy reads."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policies.policy_file import dump, export


class Command(BaseCommand):
    help = (
        "Write the console's MCP servers, agents, groups and settings as a policy file (apply_policy "
        "reads it back). Client secrets are never written."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
        parser.add_argument(
            "--output", "-o", metavar="FILE", help="Write to FILE instead of standard output."
        )

    def handle(self, *args, format: str, output: str | None, **options) -> None:
        text = dump(export(), format)
        if output is None:
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot write {output}: {error.strerror}") from None
        self.stdout.write(f"Wrote the policy to {output}.")
