"""Agents' client secrets: hashed at rest with a fast salted HMAC (console.hashers), checked at the
token endpoint; secrets hashed before with PBKDF2 keep working; human passwords keep PBKDF2."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password

import console.settings
from console.hashers import ClientSecretHasher
from policies.admin import MIN_CLIENT_SECRET_LENGTH, AgentForm
from policies.models import Agent
from tests.conftest import FORM, REDIRECT_URI, OAuthDriver, form

SECRET = "s3cr3t-" + "x" * 40


def confidential_agent(client_secret: str) -> Agent:
    return Agent.objects.create(
        name="Confidential agent",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret=client_secret,
        registration_source=Agent.RegistrationSource.MANUAL,
    )


def token_request(driver: OAuthDriver, calendar, secret: str):
    code = driver.get_code(calendar.resource, "list_events:read")
    basic = base64.b64encode(f"{driver.agent.client_id}:{secret}".encode()).decode()
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": driver.verifier,
    }
    return driver.client.post("/oauth/token/", form(data), FORM, HTTP_AUTHORIZATION=f"Basic {basic}")


def test_a_new_agent_secret_is_stored_as_a_salted_hmac_not_as_itself(db):
    agent = confidential_agent(SECRET)
    stored = Agent.objects.get(pk=agent.pk).client_secret
    assert stored.startswith("client_secret_sha256$") and SECRET not in stored
    assert check_password(SECRET, stored) and not check_password(SECRET + "x", stored)
    assert stored != ClientSecretHasher().encode(SECRET, ClientSecretHasher().salt())  # salted


@pytest.mark.parametrize("hashed", ["client secret hasher", "PBKDF2 (hashed before)"])
def test_the_token_endpoint_takes_the_agents_secret_and_refuses_a_wrong_one(
    hashed, browser, calendar, settings
):
    settings.PASSWORD_HASHERS = console.settings.PASSWORD_HASHERS  # production's: PBKDF2 first
    stored = (
        SECRET if hashed == "client secret hasher" else PBKDF2PasswordHasher().encode(SECRET, "salt", 1000)
    )
    driver = OAuthDriver(browser, confidential_agent(stored))
    assert token_request(driver, calendar, SECRET).status_code == 200
    assert token_request(driver, calendar, "wrong-" + SECRET).status_code == 401


def test_human_passwords_keep_djangos_default_hasher():
    hashers = console.settings.PASSWORD_HASHERS
    assert hashers[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    assert hashers[-1] == "console.hashers.ClientSecretHasher"
    assert console.settings.OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"] == ClientSecretHasher.algorithm


@pytest.mark.parametrize("stored", ["client_secret_sha256", "client_secret_sha256$only-a-salt", ""])
def test_a_malformed_stored_secret_matches_nothing(stored):
    assert ClientSecretHasher().verify(SECRET, stored) is False


def agent_form(client_secret: str) -> AgentForm:
    return AgentForm(
        data={
            "name": "Typed secret",
            "client_id": "typed-secret",
            "client_type": Agent.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Agent.GRANT_CLIENT_CREDENTIALS,
            "redirect_uris": "",
            "client_secret": client_secret,
            "hash_client_secret": "on",
        }
    )


def test_the_admin_refuses_a_short_typed_client_secret(db):
    """Secrets are hashed fast: a short one typed by a person could be guessed from its hash."""
    short = agent_form("hunter2hunter2")
    assert not short.is_valid()
    assert f"at least {MIN_CLIENT_SECRET_LENGTH} characters" in str(short.errors["client_secret"])
    assert agent_form("x" * MIN_CLIENT_SECRET_LENGTH).is_valid()
