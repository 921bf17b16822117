"""Settings for the test suite: production settings over real PostgreSQL and Redis, on plain http."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-" + "k" * 50)
os.environ.setdefault("CONSOLE_ISSUER", "http://testserver")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
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

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests only
# The hashed-name manifest exists only after collectstatic; tests render admin pages without it.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
# Serve static files from the apps, as DEBUG does, instead of a collected STATIC_ROOT.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
