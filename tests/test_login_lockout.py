"""Login lockout (django-axes): repeated failures of one username from one address lock that pair
out of both sign-in pages, the lockout is an audit event, and it ends with the cool-off."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from tests.conftest import ALICE_PASSWORD

LIMIT = 3
ATTACKER, ALICES_DESK = "203.0.113.66", "198.51.100.20"


@pytest.fixture(autouse=True)
def lockout_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = LIMIT


def sign_in(path: str, address: str, password: str):
    return Client(REMOTE_ADDR=address).post(path, {"username": "alice", "password": password})


def signed_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_repeated_failures_lock_the_username_out_from_that_address(alice, path):
    alice.is_staff = True  # the admin's login only takes staff
    alice.save()
    answers = [sign_in(path, ATTACKER, "wrong-guess-1") for _ in range(LIMIT)]
    assert [a.status_code for a in answers[:-1]] == [200] * (LIMIT - 1)
    assert answers[-1].status_code == 429

    refused = sign_in(path, ATTACKER, ALICE_PASSWORD)  # even the right password, now
    assert refused.status_code == 429
    assert b"Sign-in locked" in refused.content
    assert not signed_in(refused)

    # One event when the lockout starts, one for each attempt it refuses.
    events = AuditEvent.objects.filter(event_type="auth.locked_out")
    assert events.count() == 2
    for event in events:
        assert (event.outcome, event.reason, event.human_username) == (
            "deny",
            "too_many_failed_logins",
            "alice",
        )
        assert event.client_ip == ATTACKER
        assert event.detail == {"username": "alice", "failure_limit": LIMIT}


def test_the_lockout_does_not_lock_the_real_user_out_from_elsewhere(alice):
    for _ in range(LIMIT):
        sign_in("/accounts/login/", ATTACKER, "wrong-guess-1")
    response = sign_in("/accounts/login/", ALICES_DESK, ALICE_PASSWORD)
    assert signed_in(response)


def test_the_lockout_ends_after_the_cool_off(alice, settings):
    for _ in range(LIMIT):
        sign_in("/accounts/login/", ATTACKER, "wrong-guess-1")
    assert sign_in("/accounts/login/", ATTACKER, ALICE_PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert signed_in(sign_in("/accounts/login/", ATTACKER, ALICE_PASSWORD))


def test_a_successful_sign_in_resets_the_failure_count(alice):
    for _ in range(LIMIT - 1):
        sign_in("/accounts/login/", ALICES_DESK, "wrong-guess-1")
    assert signed_in(sign_in("/accounts/login/", ALICES_DESK, ALICE_PASSWORD))
    for _ in range(LIMIT - 1):
        assert sign_in("/accounts/login/", ALICES_DESK, "wrong-guess-1").status_code == 200
    assert not AuditEvent.objects.filter(event_type="auth.locked_out").exists()


def test_variants_of_the_username_count_as_the_username(alice):
    """The login form strips and NFKC-normalises the name; the lockout counts what it cleaned."""
    client = Client(REMOTE_ADDR=ATTACKER)
    for name in [" alice", "alice ", "ａｌｉｃｅ"]:  # noqa: RUF001  (full-width: NFKC makes it alice)
        client.post("/accounts/login/", {"username": name, "password": "wrong-guess-1"})
    assert not signed_in(client.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD}))
