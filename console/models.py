"""Recovery codes for console staff's two-factor authentication (console.security).

django-otp's own static device keeps its codes in clear text; these are kept as SHA-256 digests.
A code has about 49 random bits (10 of 31 characters), so an unsalted fast digest is enough (as
for tokens): only someone who holds the code can find the row, and using it deletes it.
"""

from __future__ import annotations

import hashlib
import secrets

from django.db import models, transaction
from django_otp.models import Device, ThrottlingMixin

RECOVERY_CODE_COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper without doubt


def normalize_recovery_code(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def recovery_code_digest(text: str) -> str:
    return hashlib.sha256(normalize_recovery_code(text).encode()).hexdigest()


class RecoveryCodeDevice(ThrottlingMixin, Device):
    """A staff member's single-use recovery codes, for when the authenticator app is lost."""

    class Meta(Device.Meta):
        verbose_name = "recovery code set"

    def replace_codes(self) -> list[str]:
        """New codes in place of any earlier ones; the clear text is returned once, never stored."""
        codes = [
            "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(2))
            for _ in range(RECOVERY_CODE_COUNT)
        ]
        with transaction.atomic():
            self.codes.all().delete()
            RecoveryCode.objects.bulk_create(
                RecoveryCode(device=self, digest=recovery_code_digest(code)) for code in codes
            )
        return codes

    def verify_token(self, token: str) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        # Deleting is the check: of two concurrent uses of one code, only one deletes the row.
        used = self.codes.filter(digest=recovery_code_digest(token)).delete()[0] == 1
        if used:
            self.throttle_reset()
        else:
            self.throttle_increment()
        return used

    def get_throttle_factor(self) -> int:
        return 1

    def remaining(self) -> int:
        return self.codes.count()


class RecoveryCode(models.Model):
    device = models.ForeignKey(RecoveryCodeDevice, on_delete=models.CASCADE, related_name="codes")
    digest = models.CharField(max_length=64, db_index=True)

    def __str__(self) -> str:
        return f"recovery code of {self.device.user}"  # never the code: only its digest is kept
