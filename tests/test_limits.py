"""Per-caller rate limits (429 + Retry-After, counted in Redis) and request size limits (413).

Limits here are low and their windows a day long, so that no window boundary falls inside a test.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.test import Client

from audit.models import AuditEvent
from console.roles import Role, assign_role
from policies.models import Agent
from tests.conftest import ALICE_PASSWORD, FORM, form, introspect, make_server

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    redis = caches["ratelimit"].client.get_client(write=True)
    for key in redis.scan_iter("ratelimit:*"):
        redis.delete(key)
    return settings


def limit(settings, **rates: str) -> None:
    settings.RATE_LIMITS = {**django_settings.RATE_LIMITS, **rates}


def token_request(client_id: str, address: str = "198.51.100.7"):
    data = {"grant_type": "authorization_code", "code": "not-a-code", "client_id": client_id}
    return Client(REMOTE_ADDR=address).post("/oauth/token/", form(data), FORM)


def assert_oauth_429(response) -> int:
    assert response.status_code == 429
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"]
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= DAY
    return retry_after


def test_token_endpoint_answers_429_with_retry_after_once_an_agent_exceeds_its_limit(settings, db):
    limit(settings, token_per_agent=f"3/{DAY}")
    for _ in range(3):
        assert token_request("agent-one").status_code != 429
    assert_oauth_429(token_request("agent-one"))
    # Another agent, from the same address, has its own count.
    assert token_request("agent-two").status_code != 429


def test_token_endpoint_limits_one_address_across_agents(settings, db):
    limit(settings, token_per_address=f"2/{DAY}")
    assert token_request("a1", "203.0.113.1").status_code != 429
    assert token_request("a2", "203.0.113.1").status_code != 429
    assert_oauth_429(token_request("a3", "203.0.113.1"))
    assert token_request("a4", "203.0.113.2").status_code != 429


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_a_stranger_cannot_spend_a_confidential_agents_token_budget(settings, db):
    secret = "the-real-secret-0123456789abcdef"
    agent = Agent(
        name="Confidential",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    agent.save()
    limit(settings, token_per_agent=f"3/{DAY}")
    body = form({"grant_type": "client_credentials"})
    stranger = Client(REMOTE_ADDR="203.0.113.66")
    for _ in range(3):  # its client_id with a wrong secret: counted in the stranger's own bucket
        wrong = stranger.post("/oauth/token/", body, FORM, HTTP_AUTHORIZATION=basic(agent.client_id, "wrong"))
        assert wrong.status_code != 429
    agent_itself = Client(REMOTE_ADDR="198.51.100.1")
    for _ in range(3):
        response = agent_itself.post(
            "/oauth/token/", body, FORM, HTTP_AUTHORIZATION=basic(agent.client_id, secret)
        )
        assert response.status_code != 429, response.content
    # The agent's own credentials are still limited.
    assert_oauth_429(
        agent_itself.post("/oauth/token/", body, FORM, HTTP_AUTHORIZATION=basic(agent.client_id, secret))
    )


def test_a_stranger_cannot_spend_a_public_agents_refresh_budget(settings, oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    limit(settings, token_per_agent=f"3/{DAY}")
    junk = form({"grant_type": "refresh_token", "refresh_token": "junk", "client_id": oauth.agent.client_id})
    for _ in range(4):
        assert Client(REMOTE_ADDR="203.0.113.66").post("/oauth/token/", junk, FORM).status_code != 200
    assert oauth.refresh(tokens["refresh_token"]).status_code == 200


def test_ipv6_addresses_of_one_64_share_a_bucket(settings, db):
    limit(settings, login_per_address=f"2/{DAY}")
    assert login("2001:db8:1:2::1", "z1").status_code == 200
    assert login("2001:db8:1:2::2", "z2").status_code == 200
    assert login("2001:db8:1:2:ffff::3", "z3").status_code == 429
    assert login("2001:db8:1:3::1", "z4").status_code == 200  # the next /64 is another subscriber


def test_a_proxy_that_is_not_trusted_is_reported_once(settings, db, caplog, monkeypatch):
    """Behind an untrusted proxy every client shares the proxy's bucket: the log says so."""
    settings.AUDIT_TRUSTED_PROXIES = []
    monkeypatch.setattr("console.limits._warned_proxy", False)
    with caplog.at_level(logging.WARNING, logger="console.limits"):
        for i in range(2):
            Client(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").post(
                "/accounts/login/", {"username": "u", "password": "x"}
            )
    warnings = [r.getMessage() for r in caplog.records if "AUDIT_TRUSTED_PROXIES is empty" in r.getMessage()]
    assert len(warnings) == 1 and "10.0.0.5" in warnings[0]


def register(address: str, name: str):
    body = {
        "redirect_uris": ["http://127.0.0.1:40000/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": name,
        "application_type": "native",
    }
    return Client(REMOTE_ADDR=address).post("/oauth/register/", json.dumps(body), "application/json")


def test_mass_registration_from_one_address_is_refused_with_429(settings, db):
    limit(settings, registration_per_address=f"2/{DAY}")
    assert register("192.0.2.10", "one").status_code == 201
    assert register("192.0.2.10", "two").status_code == 201
    assert_oauth_429(register("192.0.2.10", "three"))
    assert not Agent.objects.filter(name="three").exists()
    assert register("192.0.2.11", "four").status_code == 201


def login(address: str, username: str, path: str = "/accounts/login/"):
    return Client(REMOTE_ADDR=address).post(path, {"username": username, "password": "wrong-password-1"})


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_login_is_limited_per_address_with_a_plain_page(settings, db, path):
    limit(settings, login_per_address=f"2/{DAY}")
    assert login("192.0.2.20", "carol", path).status_code == 200
    assert login("192.0.2.20", "carol", path).status_code == 200
    refused = login("192.0.2.20", "carol", path)
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/html")
    assert b"Too many attempts" in refused.content
    assert int(refused["Retry-After"]) > 0
    assert login("192.0.2.21", "carol", path).status_code == 200


def test_a_stranger_cannot_block_a_real_users_login(settings, alice):
    """No per-username bucket: failures spread over many addresses do not refuse the real
    person, who is protected by django-axes' username+address lockout instead."""
    limit(settings, login_per_address=f"2/{DAY}")
    for i in range(6):
        assert login(f"203.0.113.{i + 1}", "alice").status_code == 200
    mine = Client(REMOTE_ADDR="198.51.100.2").post(
        "/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD}
    )
    assert mine.status_code == 302


def test_login_is_limited_per_address_across_usernames(settings, db):
    limit(settings, login_per_address=f"2/{DAY}")
    assert login("192.0.2.30", "u1").status_code == 200
    assert login("192.0.2.30", "u2").status_code == 200
    assert login("192.0.2.30", "u3").status_code == 429
    # Refused before authentication: the third guess never reached the password check.
    assert AuditEvent.objects.filter(event_type="auth.login_failed").count() == 2


def test_the_login_page_itself_is_not_counted(settings, db):
    limit(settings, login_per_address=f"1/{DAY}")
    for _ in range(3):
        assert Client(REMOTE_ADDR="192.0.2.40").get("/accounts/login/").status_code == 200


@pytest.fixture
def two_servers(db):
    return (
        make_server("calendar", "https://calendar.example.com/mcp", {}),
        make_server("mail", "https://mail.example.com/mcp", {}),
    )


def test_introspection_is_limited_per_mcp_server(settings, two_servers):
    calendar, mail = two_servers
    limit(settings, introspection_per_server=f"2/{DAY}")
    assert introspect(calendar, "t").status_code == 200
    assert introspect(calendar, "t").status_code == 200
    assert_oauth_429(introspect(calendar, "t"))
    assert introspect(mail, "t").status_code == 200


def test_a_caller_without_the_secret_cannot_spend_a_servers_budget(settings, two_servers):
    calendar, _ = two_servers
    limit(settings, introspection_per_server=f"2/{DAY}")
    impostor = type(calendar)(calendar.server, calendar.client_id, "wrong-secret")
    for _ in range(5):
        assert introspect(impostor, "t").status_code in (401, 429)
    assert introspect(calendar, "t").status_code == 200


def test_introspection_is_limited_per_address(settings, two_servers):
    calendar, mail = two_servers
    limit(settings, introspection_per_address=f"2/{DAY}")
    assert introspect(calendar, "t").status_code == 200
    assert introspect(mail, "t").status_code == 200
    assert_oauth_429(introspect(calendar, "t"))


def test_counts_are_shared_with_another_worker_process(settings, db):
    """A second process (another gunicorn worker) sees the first's count through Redis."""
    rate = f"2/{DAY}"
    limit(settings, login_per_address=rate)
    assert login("192.0.2.50", "erin").status_code == 200
    assert login("192.0.2.50", "erin").status_code == 200
    script = (
        "import django; django.setup();"
        "from django.test import Client;"
        "r = Client(REMOTE_ADDR='192.0.2.50').post('/accounts/login/', {'username': 'erin'});"
        "print(r.status_code, r.get('Retry-After'))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.test_settings",
        "RATE_LIMIT_LOGIN_PER_ADDRESS": rate,
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    status, retry_after = result.stdout.split()[-2:]
    assert status == "429" and int(retry_after) > 0


@pytest.fixture
def redis_down(settings):
    """The cache points at a port nothing listens on: every Redis call fails at once."""
    nowhere = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    settings.CACHES = {alias: nowhere for alias in settings.CACHES}


def test_without_redis_the_limits_fail_open_and_say_so(
    settings, oauth, calendar, caplog, redis_down, monkeypatch
):
    monkeypatch.setattr("console.limits._last_warning", 0.0)  # no earlier outage's warning pending
    limit(settings, introspection_per_server="1/60", token_per_agent="1/60")
    token = oauth.tokens(calendar.resource, "list_events:read", grant=["list_events:read"])["access_token"]
    with caplog.at_level(logging.WARNING, logger="console.limits"):
        answers = [introspect(calendar, token).json() for _ in range(3)]
    assert all(answer["active"] is True for answer in answers)
    assert "fail open" in caplog.text


# --- Request size ----------------------------------------------------------------------------------

HUGE = 2 * django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def assert_json_413(response) -> None:
    assert response.status_code == 413
    assert response["Cache-Control"] == "no-store"
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/oauth/token/", "/oauth/introspect/", "/oauth/revoke/"])
def test_a_huge_form_body_at_a_protocol_endpoint_is_413_in_oauth_json(db, path):
    assert_json_413(Client().post(path, "a=" + "x" * HUGE, FORM))


def test_a_huge_registration_is_413_in_oauth_json(db):
    body = json.dumps({"client_name": "x" * HUGE, "redirect_uris": ["http://127.0.0.1:1/cb"]})
    assert_json_413(Client().post("/oauth/register/", body, "application/json"))
    assert not Agent.objects.exists()


def test_a_huge_management_api_body_is_413_in_json(db):
    admin = User.objects.create_user("sam", password="unused-password-1")
    assign_role(admin, Role.SECURITY_ADMIN)
    client = Client()
    client.force_login(admin)
    body = json.dumps({"name": "big", "resource": "https://big.example.com/mcp", "description": "x" * HUGE})
    assert_json_413(client.post("/api/servers/", body, "application/json"))


@pytest.mark.parametrize("path", ["/accounts/login/", "/oauth/authorize/"])  # pages for people
def test_a_huge_console_form_is_a_plain_413_page(db, path):
    response = Client().post(path, "username=" + "x" * HUGE, FORM)
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")


def test_too_many_form_fields_at_a_protocol_endpoint_is_400_in_oauth_json(db):
    fields = "&".join(f"f{i}=1" for i in range(django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = Client().post("/oauth/token/", fields, FORM)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
