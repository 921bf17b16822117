"""Recovery codes for console staff's two-factor authentication (console.security).

django-otp's own static device keeps its codes in clear text; these are kept as HMAC-SHA256
digests keyed by a key derived from SECRET_KEY. A code has about 49 random bits (10 of 31
characters): a plain digest leaked with the database could be reversed by brute force in hours,
a keyed one not without the server's key. Only someone who holds the code can find the row, and
using it deletes it. Codes stored as plain SHA-256 before the key was used still verify once.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models, transaction
from django.utils.crypto import salted_hmac
from django_otp.models import Device, ThrottlingMixin

RECOVERY_CODE_COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper without doubt


def normalize_recovery_code(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


_DIGEST_SALT = "console.models.RecoveryCode"


def recovery_code_digest(text: str, secret: str | None = None) -> str:
    return salted_hmac(
        _DIGEST_SALT, normalize_recovery_code(text), secret=secret, algorithm="sha256"
    ).hexdigest()


def _digests_to_try(text: str) -> list[str]:
    """The digest under the current key, under each key being rotated out, and the unkeyed
    SHA-256 that codes enrolled before keying were stored as."""
    return [
        recovery_code_digest(text),
        *(recovery_code_digest(text, secret=old) for old in settings.SECRET_KEY_FALLBACKS),
        hashlib.sha256(normalize_recovery_code(text).encode()).hexdigest(),
    ]


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
        used = self.codes.filter(digest__in=_digests_to_try(token)).delete()[0] >= 1
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
