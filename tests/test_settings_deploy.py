"""Production settings pass Django's and DOT's deploy checks, and refuse to start half-configured."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY = ROOT / "var" / "test_oidc_rsa.pem"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # Only what a production host would set: none of the test suite's relaxations leak in.
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "DATABASE_URL") if k in os.environ}
    clean.update(DJANGO_SETTINGS_MODULE="console.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True
    )


PRODUCTION = {
    "SECRET_KEY": "p" * 20 + "-production-secret-with-enough-entropy-0123456789",
    "CONSOLE_ISSUER": "https://console.example.com",
    "OIDC_RSA_PRIVATE_KEY_FILE": str(KEY),
}


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "CONSOLE_ISSUER", "OIDC_RSA_PRIVATE_KEY_FILE"])
def test_production_refuses_to_start_without_its_secrets(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
