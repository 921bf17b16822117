"""``manage.py load_demo``: the demo of ``make run``: an admin, an approver, an auditor, a demo
human and the demo policy.

Safe to run again: existing users keep their passwords, and the policy is applied idempotently.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from console.roles import Role, assign_role
from policies.policy_file import PolicyError, apply, read_policy_file

DEMO_POLICY = Path(settings.BASE_DIR) / "examples" / "demo-policy.yaml"
DEMO_SERVER = "calendar"
# (username, console role ("superuser", a Role or None for an end user), what the user is for)
DEMO_USERS = [
    ("admin", "superuser", "console admin"),
    ("approver", Role.APPROVER, "approves delegations"),
    ("auditor", Role.COMPLIANCE_AUDITOR, "compliance auditor"),
    ("alice", None, "demo human"),
]


class Command(BaseCommand):
    help = (
        "Load the demo: users admin, approver, auditor and alice (passwords printed once) and "
        "examples/demo-policy.yaml."
    )

    def handle(self, *args, **options) -> None:
        env_file = Path(settings.VAR_DIR) / "demo-calendar-server.env"
        with transaction.atomic():
            messages = [self.ensure_user(*user) for user in DEMO_USERS]
            try:
                result = apply(read_policy_file(DEMO_POLICY))
            except PolicyError as error:
                raise CommandError(f"{DEMO_POLICY}: {error}") from None
            credentials = result.credentials.get(DEMO_SERVER)
            if credentials is not None:
                # Written inside the transaction: if it cannot be written, the server is not
                # created either, so its secret is never lost.
                write_env_file(env_file, credentials)

        for message in messages:
            self.stdout.write(message)
        if result.changed:
            self.stdout.write(f"Applied {DEMO_POLICY.name}:")
            for line in result.change_lines():
                self.stdout.write(f"  {line}")
        else:
            self.stdout.write(f"The demo policy is already in place ({DEMO_POLICY.name}).")
        if credentials is None:
            self.stdout.write(
                f"The demo MCP server '{DEMO_SERVER}' already existed: its credentials were printed when it "
                f"was created, and written to {env_file}."
            )
            return
        self.stdout.write(
            f"\nCredentials of the demo MCP server '{DEMO_SERVER}' (shown once; also in {env_file}):\n"
            f"  client_id:     {credentials['client_id']}\n"
            f"  client_secret: {credentials['client_secret']}\n"
            f"Start the example MCP server with them:\n"
            f"  CONSOLE_URL={settings.ISSUER} MCP_SERVER_CLIENT_ID={credentials['client_id']} "
            f"MCP_SERVER_CLIENT_SECRET={credentials['client_secret']} python examples/calendar_server.py"
        )

    def ensure_user(self, username: str, role: str | Role | None, purpose: str) -> str:
        User = get_user_model()
        if User.objects.filter(**{User.USERNAME_FIELD: username}).exists():
            return f"User {username} ({purpose}) already exists; left unchanged."
        password = secrets.token_urlsafe(12)
        if role == "superuser":
            User.objects.create_superuser(username, email="", password=password)
        else:
            user = User.objects.create_user(username, password=password)
            if role is not None:
                assign_role(user, role)
        return f"Created user {username} ({purpose}) with password: {password}"


def write_env_file(path: Path, credentials: dict[str, str]) -> None:
    """The demo server's settings as an env file, readable by its owner only (it holds a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the file may have existed with a wider mode
    with os.fdopen(fd, "w") as env:
        env.write(
            f"# Credentials of the demo MCP server '{DEMO_SERVER}', from manage.py load_demo.\n"
            f"# Use: set -a; . {path}; set +a; python examples/calendar_server.py\n"
            f"CONSOLE_URL={settings.ISSUER}\n"
            f"MCP_SERVER_CLIENT_ID={credentials['client_id']}\n"
            f"MCP_SERVER_CLIENT_SECRET={credentials['client_secret']}\n"
        )
