"""Settings of `make bench`: the production settings (DEBUG off), plus the benchmark's URLconf.

bench/urls.py serves the console's own URLs unchanged, and beside them the floor (a trivial JSON
view behind the same middleware) and django-oauth-toolkit's stock views, the peer the console is
compared with. Product code never imports this module.
"""

import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "bench-only-" + "b" * 50)
os.environ.setdefault("CONSOLE_ISSUER", "http://127.0.0.1")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
# Plain http on loopback: no TLS proxy in front of gunicorn here.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from console.keys import load_or_create_rsa_key  # noqa: E402

os.environ.setdefault(
    "OIDC_RSA_PRIVATE_KEY",
    load_or_create_rsa_key(Path(__file__).resolve().parent.parent / "var" / "bench_oidc_rsa.pem"),
)

from console.settings import *  # noqa: E402,F403

if DEBUG:  # noqa: F405
    raise ImproperlyConfigured("The benchmark measures production settings: unset DJANGO_DEBUG.")  # noqa: F405

ROOT_URLCONF = "bench.urls"
# The admin's pages are not measured: serve static files without a collectstatic manifest.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
# The per-caller limits (console.limits) still count every request, at their full cost, but the
# load comes from one address, one MCP server and one agent: set far above it, they never refuse.
RATE_LIMITS = {name: "1000000000/60" for name in RATE_LIMITS}  # noqa: F405
