"""Remove a staff member's second factor (lost phone and recovery codes): they enrol anew at
their next sign-in. Recorded as ``auth.2fa_reset``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp import devices_for_user

from audit.events import record


class Command(BaseCommand):
    help = "Remove a person's TOTP device and recovery codes; they enrol again at their next sign-in."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"No such person: {username}")
        with transaction.atomic():
            removed = [device.delete() for device in devices_for_user(user, confirmed=None)]
            record("auth.2fa_reset", outcome="allow", human=user, detail={"devices_removed": len(removed)})
        self.stdout.write(f"{username}: {len(removed)} device(s) removed; they enrol again at next sign-in.")
