"""CSRF on consent (RFC 6749 §10.12, RFC 9700 §4.7): a page elsewhere cannot make a signed-in
human's browser approve an agent. The consent POST needs Django's CSRF token; without it (or with
another session's) it is refused and nothing is delegated. The ``state`` the agent sent comes
back unchanged, so the agent can bind the response to its own request."""

import pytest
from django.test import Client

from tests.threats.support import nothing_granted, redirect_query


def consent_post(oauth, calendar) -> dict:
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    return {**params, "scope": "list_events:read", "grant": ["list_events:read"], "allow": "Allow"}


def test_a_consent_post_without_a_csrf_token_is_refused(alice, oauth, calendar):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    response = browser.post("/oauth/authorize/", consent_post(oauth, calendar))

    assert response.status_code == 403
    assert nothing_granted()


@pytest.mark.parametrize("forged", ["attacker-token" * 3, ""], ids=["forged", "empty"])
def test_a_consent_post_with_a_token_not_of_this_session_is_refused(alice, oauth, calendar, forged):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource))  # sets the cookie

    response = browser.post(
        "/oauth/authorize/", {**consent_post(oauth, calendar), "csrfmiddlewaretoken": forged}
    )

    assert response.status_code == 403
    assert nothing_granted()


def test_the_agents_state_comes_back_unchanged(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read", state="s-Ωx/+=&?")
    assert redirect_query(oauth.consent(params))["state"] == "s-Ωx/+=&?"
