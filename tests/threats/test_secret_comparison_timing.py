"""Timing of secret comparison (RFC 6749 §10.10 and common sense): comparing a presented secret
byte by byte, stopping at the first difference, lets an attacker learn it from response times.

A statistical timing test would be slow and flaky on a shared machine, so this module tests the
mechanism instead, honestly: it watches the comparison functions at the point of use and proves
that every secret the console checks goes through a constant-time comparison of fixed-length
values (``hmac.compare_digest`` or Django's ``constant_time_compare``), through the real doors:

- an MCP server's secret (introspection and the event API: ``McpServer.check_secret``);
- a confidential agent's secret at the token endpoint (DOT, then the client-secret hasher's
  ``constant_time_compare``, which is ``secrets.compare_digest``);
- the PKCE verifier (oauthlib's S256 check).

Secrets looked up by value (access, refresh and registration tokens; server client ids) are found
by their SHA-256 in an indexed column, so no comparison of the secret itself happens in Python."""

import base64
import hmac
import secrets

import pytest
from django.test import Client

from policies.models import Agent, hash_secret
from tests.conftest import FORM, REDIRECT_URI, form, introspect


@pytest.fixture
def compare_digest_calls(monkeypatch) -> list[tuple]:
    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize("presented", ["wrong", "x" * 43, ""], ids=["short", "same-length", "empty"])
def test_a_server_secret_is_compared_in_constant_time_as_fixed_length_digests(
    compare_digest_calls, calendar, presented
):
    raw = f"{calendar.client_id}:{presented}".encode()
    response = Client().post(
        "/oauth/introspect/",
        form({"token": "t"}),
        FORM,
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(raw).decode(),
    )

    assert response.status_code == 401
    assert (calendar.server.secret_hash, hash_secret(presented)) in compare_digest_calls
    # Both sides are 64 hex characters whatever was sent: not even the length is compared.
    assert all(len(a) == len(b) == 64 for a, b in compare_digest_calls)


def test_the_right_server_secret_passes_the_same_comparison(compare_digest_calls, oauth, calendar):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    compare_digest_calls.clear()

    assert introspect(calendar, token).json()["active"] is True

    assert (calendar.server.secret_hash, hash_secret(calendar.client_secret)) in compare_digest_calls


def test_a_confidential_agents_secret_is_compared_in_constant_time_as_hashes(monkeypatch, db):
    # Django's constant_time_compare, wherever a hasher imported it, ends in secrets.compare_digest.
    calls, real = [], secrets.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(secrets, "compare_digest", spy)
    agent = Agent(
        name="confidential",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret="the-agent-secret",
        hash_client_secret=True,
    )
    agent.save()
    stored = Agent.objects.get(pk=agent.pk).client_secret
    body = {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": REDIRECT_URI,
        "code_verifier": "v" * 43,
    }

    response = Client().post(
        "/oauth/token/",
        form({**body, "client_id": agent.client_id, "client_secret": "a-wrong-guess"}),
        FORM,
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # The stored hash against the guess hashed the same way: equal lengths, never the raw secret.
    (compared,) = [(a, b) for a, b in calls if a == stored.encode()]
    assert len(compared[0]) == len(compared[1])
    assert b"the-agent-secret" not in compared[1] and b"a-wrong-guess" not in compared[1]


def test_the_pkce_verifier_is_compared_in_constant_time(compare_digest_calls, oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    compare_digest_calls.clear()

    response = oauth.exchange(code, calendar.resource, verifier="w" * 50)

    assert response.status_code == 400
    assert len(compare_digest_calls) == 1
    computed, stored = compare_digest_calls[0]
    assert len(computed) == len(stored) == 43  # two S256 challenges, base64url of SHA-256
    assert computed != stored
