"""Signing key handling for the development setup."""

from pathlib import Path

from jwcrypto import jwk


def load_or_create_rsa_key(path: Path) -> str:
    """Return the PEM RSA key at ``path``, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = jwk.JWK.generate(kty="RSA", size=2048).export_to_pem(private_key=True, password=None).decode()
    path.touch(mode=0o600)
    path.write_text(pem)
    return pem
