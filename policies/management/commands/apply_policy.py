"""``manage.py apply_policy FILE``: make the console match a policy file (see policies.policy_file)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policies.policy_file import PolicyError, apply, read_policy_file


class Command(BaseCommand):
    help = (
        "Make the console match a policy file (YAML or JSON): MCP servers and their tools, agents, groups "
        "and the scopes they may delegate, settings. Servers, agents and groups the file does not list are "
        "left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Policy file, YAML or JSON.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would change, and change nothing."
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help=(
                "Print a JSON summary, with the credentials of MCP servers and confidential agents "
                "created by this run."
            ),
        )

    def handle(self, *args, file: str, dry_run: bool, **options) -> None:
        try:
            result = apply(read_policy_file(Path(file)), dry_run=dry_run)
        except PolicyError as error:
            problems = "\n".join(f"  {problem}" for problem in error.problems)
            raise CommandError(f"{file}: the policy was not applied, nothing changed:\n{problems}") from None

        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        if not result.changed:
            self.stdout.write(f"No changes: the console already matches {file}.")
            return
        self.stdout.write(
            f"Dry run of {file}; nothing was changed. It would make:" if dry_run else f"Applied {file}:"
        )
        for line in result.change_lines():
            self.stdout.write(f"  {line}")
        for name, credentials in result.credentials.items():
            self.stdout.write(
                f"\nIntrospection credentials of the new MCP server '{name}' (shown once; store them now):\n"
                f"  client_id:     {credentials['client_id']}\n"
                f"  client_secret: {credentials['client_secret']}"
            )
        for client_id, secret in result.agent_secrets.items():
            self.stdout.write(
                f"\nClient secret of the confidential agent '{client_id}' (shown once; store it now):\n"
                f"  client_secret: {secret}"
            )
