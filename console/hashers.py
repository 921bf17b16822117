"""A password hasher for generated client secrets, which are random, not chosen by people.

A slow KDF (Django's PBKDF2, ~1,000,000 iterations) protects guessable human passwords; against a
secret of 256 random bits it adds nothing, and confidential agents would pay it on every token
request. One salted HMAC-SHA256 keeps such secrets hashed at rest and checked in microseconds.
Human passwords keep Django's default hasher: this one comes after it in PASSWORD_HASHERS and is
chosen for agents' secrets only (OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"]). Secrets hashed before
keep verifying with the hasher named in their stored value.
"""

from __future__ import annotations

import hashlib
import hmac

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_noop as _


class ClientSecretHasher(BasePasswordHasher):
    algorithm = "client_secret_sha256"

    def encode(self, password: str, salt: str) -> str:
        self._check_encode_args(password, salt)
        digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
        return f"{self.algorithm}${salt}${digest}"

    def decode(self, encoded: str) -> dict[str, str]:
        algorithm, salt, digest = encoded.split("$", 2)
        if algorithm != self.algorithm:
            raise ValueError(f"Not a {self.algorithm} hash.")
        return {"algorithm": algorithm, "salt": salt, "hash": digest}

    def verify(self, password: str, encoded: str) -> bool:
        try:
            decoded = self.decode(encoded)
        except ValueError:
            return False  # a malformed stored value matches nothing
        return constant_time_compare(encoded, self.encode(password, decoded["salt"]))

    def safe_summary(self, encoded: str) -> dict[str, str]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("salt"): mask_hash(decoded["salt"], show=2),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass  # one cost only: nothing to even out
