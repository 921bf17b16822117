"""Security headers and the Content-Security-Policy on every kind of page, and the production
cookies: __Host- session and CSRF cookies, HSTS, two-factor authentication required for staff."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from console.roles import Role, assign_role
from tests.test_settings_deploy import PRODUCTION, manage


@pytest.fixture
def staff(db) -> Client:
    admin = User.objects.create_user("sam", password="unused-password-1")
    assign_role(admin, Role.SECURITY_ADMIN)
    client = Client()
    client.force_login(admin)
    return client


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


PAGES = [
    "/accounts/login/",
    "/my-agents/",
    "/admin/",
    "/admin/policies/mcpserver/",
    "/api/docs/",
    "/api/servers/",
    "/.well-known/oauth-authorization-server",
    "/no-such-page/",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_the_security_headers(staff, path):
    response = staff.get(path)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"]


def test_protocol_endpoints_carry_the_headers_too(db):
    response = Client().post("/oauth/introspect/", "token=x", "application/x-www-form-urlencoded")
    assert response.status_code == 401
    assert response["X-Content-Type-Options"] == "nosniff"
    assert directives(response)["default-src"] == ["'self'"]


def test_only_the_admin_allows_eval_for_its_alpine_js(staff):
    assert "'unsafe-eval'" in directives(staff.get("/admin/"))["script-src"]
    for path in ("/accounts/login/", "/my-agents/", "/api/docs/"):
        assert "'unsafe-eval'" not in directives(staff.get(path))["script-src"], path


def test_the_api_docs_inline_script_runs_under_the_headers_nonce(staff):
    response = staff.get("/api/docs/")
    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    scripts = re.findall(r"<script([^>]*)>", response.content.decode())
    inline = [attrs for attrs in scripts if "src=" not in attrs]
    assert inline == [f' nonce="{nonce}"']


# --- Production settings ------------------------------------------------------------------------

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
response = Client(SERVER_NAME="console.example.com").get("/accounts/login/", secure=True)
cookie = response.cookies[settings.CSRF_COOKIE_NAME]
print(json.dumps({
    "session": settings.SESSION_COOKIE_NAME, "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf": settings.CSRF_COOKIE_NAME, "require_2fa": settings.CONSOLE_REQUIRE_2FA,
    "axes": settings.AXES_ENABLED, "status": response.status_code,
    "hsts": response.get("Strict-Transport-Security"),
    "cookie": {"secure": cookie["secure"], "path": cookie["path"], "domain": cookie["domain"]},
}))
"""


def test_production_uses_host_prefixed_cookies_hsts_lockout_and_staff_two_factor():
    result = manage("shell", "-c", PROBE, **PRODUCTION)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["status"] == 200
    assert (found["session"], found["session_secure"]) == ("__Host-sessionid", True)
    assert found["csrf"] == "__Host-csrftoken"
    # What the __Host- prefix demands of the cookie the browser really receives.
    assert found["cookie"] == {"secure": True, "path": "/", "domain": ""}
    assert found["hsts"].startswith("max-age=31536000")
    assert found["require_2fa"] is True
    assert found["axes"] is True
