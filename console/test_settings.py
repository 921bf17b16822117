"""Settings for the test suite: production settings over real PostgreSQL and Redis, on plain http."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-" + "k" * 50)
os.environ.setdefault("CONSOLE_ISSUER", "http://testserver")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
# Staff sessions skip the second factor and logins are not locked out, except in the tests of
# those defences (tests/test_two_factor*.py, tests/test_login_lockout.py), which turn them on:
# the suite signs staff in with force_login and Client.login, which django-axes refuses.
os.environ.setdefault("CONSOLE_REQUIRE_2FA", "0")
os.environ.setdefault("AXES_ENABLED", "0")
# Rate limits far above what any test sends; tests/test_limits.py sets its own low ones.
for _name in (
    "TOKEN_PER_AGENT",
    "TOKEN_PER_ADDRESS",
    "REGISTRATION_PER_ADDRESS",
    "LOGIN_PER_ADDRESS",
    "TWO_FACTOR_PER_USER",
    "TWO_FACTOR_PER_ADDRESS",
    "INTROSPECTION_PER_SERVER",
    "INTROSPECTION_PER_ADDRESS",
):
    os.environ.setdefault(f"RATE_LIMIT_{_name}", "1000000/60")
# The IdP stand-ins serve their keys on loopback (tests/idp_standin.py).
os.environ.setdefault("IDENTITY_ALLOW_LOOPBACK_JWKS", "1")
# Tasks run inline unless a test starts a real worker (tests/celery_worker.py).
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
if "DATABASE_URL" not in os.environ:
    raise RuntimeError("The tests need DATABASE_URL (PostgreSQL) and REDIS_URL: run them with `make test`.")

from pathlib import Path  # noqa: E402

from console.keys import load_or_create_rsa_key  # noqa: E402

os.environ.setdefault(
    "OIDC_RSA_PRIVATE_KEY",
    load_or_create_rsa_key(Path(__file__).resolve().parent.parent / "var" / "test_oidc_rsa.pem"),
)

from console.settings import *  # noqa: E402,F403

# Fast logins in tests only; agents' secrets keep the production hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "console.hashers.ClientSecretHasher"]
# The hashed-name manifest exists only after collectstatic; tests render admin pages without it.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
# Serve static files from the apps, as DEBUG does, instead of a collected STATIC_ROOT.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
