"""DCR abuse, mass registration: one caller registering agents by the thousand (to flood the agent
list, the consent pages of humans, the audit trail). Registration is limited per client address
(``RATE_LIMITS["registration_per_address"]``, console.limits; its own test is tests/test_limits.py).
Here the attacker tries to slip past it: changing names and redirect URIs, forging
``X-Forwarded-For`` from an address that is no trusted proxy. Every registration over
the limit is 429 with Retry-After and creates nothing: no agent, no registration token, no event."""

import json

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import Client

from policies.models import AccessToken, Agent
from tests.test_registration import sdk_registration
from tests.threats.support import events

ATTACKER = "203.0.113.66"


@pytest.fixture(autouse=True)
def limit_of_two(settings):
    redis = caches["ratelimit"].client.get_client(write=True)
    for key in redis.scan_iter("ratelimit:*"):
        redis.delete(key)
    # Two a day: a day-long window has no boundary inside the test.
    settings.RATE_LIMITS = {**django_settings.RATE_LIMITS, "registration_per_address": "2/86400"}


def register(number: int, **headers):
    body = sdk_registration(
        client_name=f"spam agent {number}", redirect_uris=[f"http://127.0.0.1:{2000 + number}/cb"]
    )
    return Client(REMOTE_ADDR=ATTACKER, **headers).post(
        "/oauth/register/", json.dumps(body), "application/json"
    )


def test_varying_names_and_redirect_uris_does_not_reset_the_limit(db):
    assert [register(n).status_code for n in range(2)] == [201, 201]

    refused = [register(n) for n in range(2, 12)]

    assert {r.status_code for r in refused} == {429}
    assert all(int(r["Retry-After"]) > 0 and r.json()["error"] == "temporarily_unavailable" for r in refused)
    assert Agent.objects.count() == 2
    assert AccessToken.objects.count() == 2  # the two registration access tokens, no more
    assert len(events("agent.registered")) == 2


def test_a_forged_forwarded_for_header_does_not_reset_the_limit(db, settings):
    settings.AUDIT_TRUSTED_PROXIES = []  # the attacker talks to the console directly
    register(0), register(1)

    forged = [register(n, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(2, 8)]

    assert {r.status_code for r in forged} == {429}
    assert Agent.objects.count() == 2
