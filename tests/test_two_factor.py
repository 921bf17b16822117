"""Two-factor authentication for console staff: enrolment with a TOTP app and recovery codes,
verification at every sign-in before any console page or API call, single-use recovery codes,
every step in the audit trail; end users are never asked."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from console.models import RecoveryCode, RecoveryCodeDevice, normalize_recovery_code
from console.roles import Role, assign_role
from console.security import _verified_device
from tests.conftest import ALICE_PASSWORD

PASSWORD = "sam-password-4711"


@pytest.fixture(autouse=True)
def two_factor_required(settings):
    settings.CONSOLE_REQUIRE_2FA = True


@pytest.fixture
def sam(db) -> User:
    user = User.objects.create_user("sam", password=PASSWORD)
    assign_role(user, Role.SECURITY_ADMIN)
    return user


def signed_in_staff() -> Client:
    """A browser past the password step of the admin's own sign-in page."""
    client = Client()
    response = client.post("/admin/login/", {"username": "sam", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


def code_for(secret: str, steps_ahead: int = 0) -> str:
    """What an authenticator app shows for the key on the enrolment page (``steps_ahead``: the code
    of a later 30-second step, which the console accepts within its tolerance of one step)."""
    compact = secret.replace(" ", "")
    key = base64.b32decode(compact + "=" * (-len(compact) % 8))
    return f"{totp(key, drift=steps_ahead):06d}"


def secret_on(page) -> str:
    return re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.content.decode()).group(1)


def enrol(client: Client) -> tuple[str, list[str]]:
    """Scan (read the key), confirm a code; returns the key and the recovery codes shown once."""
    page = client.get("/accounts/two-factor/setup/")
    secret = secret_on(page)
    done = client.post("/accounts/two-factor/setup/", {"code": code_for(secret), "next": "/admin/"})
    assert done.status_code == 200, done.content[:500]
    return secret, re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.content.decode())


def test_staff_without_a_device_must_enrol_before_any_console_page_or_api_call(sam):
    client = signed_in_staff()
    response = client.get("/admin/policies/agent/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/two-factor/setup/?next=%2Fadmin%2Fpolicies%2Fagent%2F"
    assert client.get("/audit/exports/new/").status_code == 302
    api = client.get("/api/servers/")
    assert api.status_code == 403
    assert "Two-factor" in api.json()["detail"]


def test_enrolment_shows_a_qr_code_confirms_a_code_and_shows_recovery_codes_once(sam):
    client = signed_in_staff()
    page = client.get("/accounts/two-factor/setup/")
    assert b"<svg" in page.content and page["Cache-Control"].startswith("max-age=0")
    secret, codes = enrol(client)

    assert len(codes) == 10 and len(set(codes)) == 10
    stored = set(RecoveryCode.objects.filter(device__user=sam).values_list("digest", flat=True))
    assert len(stored) == 10
    # Only digests are kept: nothing stored holds a code, with or without its dash.
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in stored)
    assert not any(code.replace("-", "") in digest for code in codes for digest in stored)
    assert TOTPDevice.objects.get(user=sam).confirmed
    event = AuditEvent.objects.get(event_type="auth.2fa_enrolled")
    assert (event.outcome, event.human_username, event.detail) == (
        "allow",
        "sam",
        {"device": "totp", "recovery_codes": 10},
    )
    # This session is verified by the enrolment itself.
    assert client.get("/admin/").status_code == 200
    assert client.get("/api/servers/").status_code == 200
    # The codes are never shown again: setup now sends an enrolled person to verify.
    assert client.get("/accounts/two-factor/setup/")["Location"].startswith("/accounts/two-factor/verify/")


def test_a_wrong_code_at_enrolment_is_refused_and_audited(sam):
    client = signed_in_staff()
    client.get("/accounts/two-factor/setup/")
    response = client.post("/accounts/two-factor/setup/", {"code": "000000"})
    assert response.status_code == 400
    assert not TOTPDevice.objects.filter(user=sam, confirmed=True).exists()
    event = AuditEvent.objects.get(event_type="auth.2fa_failed")
    assert (event.outcome, event.reason, event.detail) == ("deny", "wrong_code", {"step": "enrolment"})


def test_every_sign_in_asks_for_a_code_and_a_code_is_good_once(sam):
    secret, _ = enrol(signed_in_staff())
    client = signed_in_staff()
    gate = client.get("/admin/")
    assert gate["Location"] == "/accounts/two-factor/verify/?next=%2Fadmin%2F"

    code = code_for(secret, steps_ahead=1)  # the enrolment used this step's code
    right = client.post("/accounts/two-factor/verify/", {"code": code, "next": "/admin/"})
    assert (right.status_code, right["Location"]) == (302, "/admin/")
    assert client.get("/admin/").status_code == 200
    assert AuditEvent.objects.filter(event_type="auth.2fa_verified", human_username="sam").exists()

    replay = signed_in_staff()  # the same code, seen over a shoulder, in another browser
    assert replay.post("/accounts/two-factor/verify/", {"code": code}).status_code == 400
    assert replay.get("/admin/").status_code == 302


def test_a_wrong_code_at_sign_in_is_refused_and_audited(sam):
    enrol(signed_in_staff())
    client = signed_in_staff()
    wrong = client.post("/accounts/two-factor/verify/", {"code": "123456", "next": "/admin/"})
    assert wrong.status_code == 400
    assert client.get("/admin/").status_code == 302
    failed = AuditEvent.objects.get(event_type="auth.2fa_failed")
    assert (failed.outcome, failed.human_username, failed.detail) == ("deny", "sam", {"step": "sign-in"})


def test_a_recovery_code_signs_in_once(sam):
    _, codes = enrol(signed_in_staff())
    client = signed_in_staff()
    response = client.post("/accounts/two-factor/verify/", {"code": codes[0].upper(), "next": "/admin/"})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    event = AuditEvent.objects.get(event_type="auth.recovery_code_used")
    assert (event.human_username, event.detail) == ("sam", {"remaining": 9})

    again = signed_in_staff()
    assert again.post("/accounts/two-factor/verify/", {"code": codes[0]}).status_code == 400
    assert again.get("/admin/").status_code == 302
    assert RecoveryCode.objects.filter(device__user=sam).count() == 9


def test_after_verification_only_local_next_urls_are_followed(sam):
    _, codes = enrol(signed_in_staff())
    client = signed_in_staff()
    response = client.post(
        "/accounts/two-factor/verify/", {"code": codes[1], "next": "https://evil.example/phish"}
    )
    assert response["Location"] == "/admin/"


def test_end_users_are_never_asked_for_a_second_factor(alice, oauth, calendar):
    assert oauth.browser.get("/my-agents/").status_code == 200
    assert "access_token" in oauth.tokens(calendar.resource, "list_events:read", grant=["list_events:read"])
    assert oauth.browser.get("/accounts/two-factor/setup/").status_code == 403
    client = Client()
    response = client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    assert response.status_code == 302 and not response["Location"].startswith("/accounts/two-factor/")


def test_a_reset_second_factor_is_enrolled_anew_at_the_next_sign_in(sam):
    enrol(signed_in_staff())
    call_command("reset_two_factor", "sam", stdout=StringIO())
    assert not RecoveryCode.objects.exists() and not TOTPDevice.objects.exists()
    assert AuditEvent.objects.get(event_type="auth.2fa_reset").detail == {"devices_removed": 2}
    gate = signed_in_staff().get("/admin/")
    assert gate["Location"].startswith("/accounts/two-factor/setup/")


def test_signing_in_with_the_second_factor_gives_the_session_a_new_key(sam):
    secret, _ = enrol(signed_in_staff())
    client = signed_in_staff()
    before = client.session.session_key
    client.post("/accounts/two-factor/verify/", {"code": code_for(secret, steps_ahead=1)})
    assert client.get("/admin/").status_code == 200
    assert client.session.session_key != before


def test_the_verify_page_is_rate_limited_per_staff_member(sam, settings):
    redis = caches["ratelimit"].client.get_client(write=True)
    for key in redis.scan_iter("ratelimit:*"):
        redis.delete(key)
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "two_factor_per_user": "3/86400"}
    enrol(signed_in_staff())
    statuses = []
    for i in range(4):  # each guess from a fresh address and browser: counted for the person
        client = Client(REMOTE_ADDR=f"203.0.113.{i + 1}")
        client.post("/admin/login/", {"username": "sam", "password": PASSWORD, "next": "/admin/"})
        statuses.append(client.post("/accounts/two-factor/verify/", {"code": "000000"}).status_code)
    assert statuses == [400, 400, 400, 429]


@pytest.mark.django_db(transaction=True)
def test_one_totp_code_verifies_once_even_for_two_concurrent_requests(monkeypatch):
    user = User.objects.create_user("tess", password=PASSWORD, is_staff=True)
    device = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    code = f"{totp(device.bin_key):06d}"
    both_checking = threading.Barrier(2, timeout=1)
    check = TOTPDevice.verify_token

    def verify_token(self, token):
        try:
            both_checking.wait()  # without a row lock, both requests hold the device at once
        except threading.BrokenBarrierError:
            pass  # with it, the other request waits for the row until this one is done
        return check(self, token)

    monkeypatch.setattr(TOTPDevice, "verify_token", verify_token)
    accepted = []

    def sign_in() -> None:
        try:
            accepted.append(_verified_device(user, code) is not None)
        finally:
            connection.close()

    requests = [threading.Thread(target=sign_in) for _ in range(2)]
    for request in requests:
        request.start()
    for request in requests:
        request.join()
    assert sorted(accepted) == [False, True]


def test_a_staff_session_without_its_second_factor_cannot_consent_or_manage_agents(
    sam, alice, oauth, calendar
):
    """With a staff member's password alone, nobody delegates that person's scopes to an agent."""
    secret, _ = enrol(signed_in_staff())
    client = signed_in_staff()
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    consent = client.get("/oauth/authorize/", params)
    assert consent.status_code == 302
    assert consent["Location"].startswith("/accounts/two-factor/verify/?next=%2Foauth%2Fauthorize%2F%3F")
    assert client.get("/my-agents/")["Location"] == "/accounts/two-factor/verify/?next=%2Fmy-agents%2F"
    # Once verified, the consent continues where it was.
    authorize_url = f"/oauth/authorize/?{urlencode(params)}"
    verified = client.post(
        "/accounts/two-factor/verify/", {"code": code_for(secret, 1), "next": authorize_url}
    )
    assert verified["Location"] == authorize_url
    assert client.get(authorize_url).status_code == 200
    assert client.get("/my-agents/").status_code == 200


def test_recovery_codes_are_kept_as_keyed_digests_and_older_plain_ones_still_verify(sam, settings):
    """A leaked database alone does not give the codes: the digest needs the server's key."""
    _, codes = enrol(signed_in_staff())
    stored = set(RecoveryCode.objects.filter(device__user=sam).values_list("digest", flat=True))
    plain = {hashlib.sha256(normalize_recovery_code(code).encode()).hexdigest() for code in codes}
    assert stored and not stored & plain
    # A code enrolled before the digests were keyed still signs in, once.
    device = RecoveryCodeDevice.objects.get(user=sam)
    RecoveryCode.objects.filter(device=device).delete()
    RecoveryCode.objects.create(device=device, digest=hashlib.sha256(b"abcde23456").hexdigest())
    client = signed_in_staff()
    assert client.post("/accounts/two-factor/verify/", {"code": "abcde-23456"}).status_code == 302
    assert not RecoveryCode.objects.filter(device=device).exists()
