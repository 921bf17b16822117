"""Session fixation (OWASP; RFC 9700 §4.7's CSRF defences rely on the session): an attacker who
planted a session id in the human's browser must not find it signed in afterwards. Logging in,
whether directly or on the way to a consent page, gives a new session id; the planted one stays
anonymous, and logging out or in as someone else leaves nothing of the previous session behind."""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import Client

from tests.conftest import ALICE_PASSWORD

SessionStore = import_module(settings.SESSION_ENGINE).SessionStore


def planted_session() -> str:
    """A session the attacker created (e.g. by visiting the login page) and planted in a browser."""
    session = SessionStore()
    session["planted"] = "by the attacker"
    session.create()
    return session.session_key


def browser_with(session_key: str) -> Client:
    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = session_key
    return browser


def signed_in(session_key: str) -> bool:
    data = SessionStore(session_key=session_key).load()
    return SESSION_KEY in data


def test_logging_in_rotates_a_planted_session_id(alice):
    planted = planted_session()
    victim = browser_with(planted)

    response = victim.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})

    assert response.status_code == 302
    new_key = victim.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != planted
    assert signed_in(new_key) and not signed_in(planted)
    assert browser_with(planted).get("/my-agents/").status_code == 302  # still anonymous: to login


def test_logging_in_on_the_way_to_consent_rotates_the_session_id(alice, oauth, calendar):
    planted = planted_session()
    victim = browser_with(planted)
    consent = victim.get("/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read"))
    assert consent.status_code == 302 and consent["Location"].startswith("/accounts/login/")

    login = victim.post(consent["Location"], {"username": "alice", "password": ALICE_PASSWORD})

    assert login.status_code == 302 and login["Location"].startswith("/oauth/authorize/")
    assert victim.cookies[settings.SESSION_COOKIE_NAME].value != planted
    assert not signed_in(planted)
    assert victim.get(login["Location"]).status_code == 200  # the consent page, for alice
    attacker = browser_with(planted).get(login["Location"])
    assert attacker.status_code == 302 and attacker["Location"].startswith("/accounts/login/")


def test_logging_out_ends_the_session_server_side(alice):
    browser = Client()
    browser.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})
    key = browser.cookies[settings.SESSION_COOKIE_NAME].value

    browser.post("/accounts/logout/")

    assert not signed_in(key)
    assert browser_with(key).get("/my-agents/").status_code == 302


def test_logging_in_as_someone_else_keeps_nothing_of_the_previous_session(alice):
    from tests.api_support import person

    person("bob")
    browser = Client()
    browser.post("/accounts/login/", {"username": "bob", "password": "bob-password-123"})
    session = browser.session
    session["pending_authorizations"] = {"1": {"client_id": "bobs-agent"}}
    session.save()
    bobs_key = session.session_key

    browser.post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})

    assert browser.session.session_key != bobs_key
    assert "pending_authorizations" not in browser.session
