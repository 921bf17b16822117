"""Introspection by a non-server (RFC 7662 §4; RFC 9700 §4.10): introspection tells whether a
token is live, for whom and with which scopes, so only a registered, active MCP server with its own
credentials may ask. No credentials, wrong ones, an agent's, a human's console session, a bearer
token, a deactivated server's or a rotated-away secret all get 401 ``invalid_client`` and learn
nothing: no ``active``, no audit event about the token, the token's last use unchanged."""

import base64

import pytest
from django.test import Client

from audit.models import AuditEvent
from console.roles import Role
from policies.models import Agent, Delegation
from tests.api_support import person
from tests.conftest import FORM, REDIRECT_URI, form, introspect


def attempt(token: str, client: Client | None = None, **extra):
    return (client or Client()).post(
        "/oauth/introspect/", form({"token": token, **extra.pop("body", {})}), FORM, **extra
    )


def assert_refused_and_nothing_learned(response, token_events_before: int) -> None:
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.json()
    assert response["Cache-Control"] == "no-store"
    assert AuditEvent.objects.filter(event_type__in=["introspection", "tool_call.decision"]).count() == (
        token_events_before
    )
    assert Delegation.objects.get().last_used is None


@pytest.fixture
def token(oauth, calendar) -> str:
    return oauth.tokens(calendar.resource, "list_events:read")["access_token"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic bm9wZTpub3Bl", "Bearer whatever", "Basic !!!notbase64", "Basic YWJj", "Digest x"],
    ids=["none", "wrong-secret", "bearer", "garbage", "no-colon", "other-scheme"],
)
def test_without_server_credentials_it_is_401(token, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    assert_refused_and_nothing_learned(attempt(token, **headers), 0)


@pytest.mark.parametrize("secret", ["guess", "", "x" * 43], ids=["guess", "empty", "same-length-guess"])
def test_the_servers_own_client_id_with_a_wrong_secret_cannot_introspect(token, calendar, secret):
    raw = base64.b64encode(f"{calendar.client_id}:{secret}".encode()).decode()
    assert_refused_and_nothing_learned(attempt(token, HTTP_AUTHORIZATION=f"Basic {raw}"), 0)
    body = {"client_id": calendar.client_id, "client_secret": secret}
    assert_refused_and_nothing_learned(attempt(token, body=body), 0)


def test_an_agents_own_credentials_cannot_introspect(token):
    agent = Agent(
        name="confidential",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret="agent-secret-value",
        hash_client_secret=True,
    )
    agent.save()
    body = {"client_id": agent.client_id, "client_secret": "agent-secret-value"}
    assert_refused_and_nothing_learned(attempt(token, body=body), 0)


def test_a_public_agent_naming_only_its_client_id_cannot_introspect(token, oauth):
    assert_refused_and_nothing_learned(attempt(token, body={"client_id": oauth.agent.client_id}), 0)


def test_the_agents_access_token_as_a_bearer_cannot_introspect(token):
    assert_refused_and_nothing_learned(attempt(token, HTTP_AUTHORIZATION=f"Bearer {token}"), 0)


@pytest.mark.parametrize("role", [None, Role.SECURITY_ADMIN], ids=["end-user", "security-admin"])
def test_a_humans_console_session_cannot_introspect(token, role, alice):
    browser = Client()
    browser.force_login(alice if role is None else person("admin", role))
    assert_refused_and_nothing_learned(attempt(token, browser), 0)


def test_a_deactivated_servers_credentials_cannot_introspect(token, calendar):
    calendar.server.active = False
    calendar.server.save()
    assert_refused_and_nothing_learned(attempt(token, HTTP_AUTHORIZATION=calendar.basic_auth()), 0)


def test_a_rotated_away_secret_cannot_introspect(token, calendar):
    old = calendar.basic_auth()
    calendar.server.set_new_credentials()
    calendar.server.client_id = calendar.client_id  # same id, new secret
    calendar.server.save()
    assert_refused_and_nothing_learned(attempt(token, HTTP_AUTHORIZATION=old), 0)


def test_the_server_itself_may_by_basic_or_client_secret_post(token, calendar):
    assert introspect(calendar, token).json()["active"] is True
    body = {"client_id": calendar.client_id, "client_secret": calendar.client_secret}
    assert attempt(token, body=body).json()["active"] is True
