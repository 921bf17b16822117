"""Authorization code injection (RFC 9700 §4.5): an attacker who got hold of a human's code
redeems it from another agent, another PKCE session or another redirect URI (one left out of the
token request is the agent's first registered URI, so it must be the one authorized too). PKCE (S256), the
code's binding to its client and to its redirect URI refuse every variant; no token is minted."""

import pytest

from policies.models import AccessToken
from tests.api_support import make_agent
from tests.conftest import FORM, REDIRECT_URI, form, pkce_pair
from tests.threats.support import snapshot


def exchange(oauth, code: str, **changes):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": oauth.agent.client_id,
        "code_verifier": oauth.verifier,
    } | changes
    return oauth.client.post("/oauth/token/", form({k: v for k, v in data.items() if v is not None}), FORM)


def test_a_code_redeemed_by_another_agent_is_refused(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    attacker = make_agent("Attacker agent")
    before = snapshot()

    # Even with the victim's verifier: a code belongs to the agent it was issued to.
    response = exchange(oauth, code, client_id=attacker.client_id)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response["Cache-Control"] == "no-store"
    assert snapshot() == before


def test_a_code_injected_into_the_attackers_own_pkce_session_is_refused(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    attackers_verifier, _ = pkce_pair()
    before = snapshot()

    response = exchange(oauth, code, code_verifier=attackers_verifier)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert snapshot() == before


def test_a_code_redeemed_without_its_verifier_is_refused(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    before = snapshot()

    response = exchange(oauth, code, code_verifier=None)

    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_request", "invalid_grant"}
    assert snapshot() == before


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:40111/callback", "http://127.0.0.1:53682/other"],
    ids=["other-loopback-port", "other-path"],
)
def test_a_code_redeemed_at_another_redirect_uri_is_refused(oauth, calendar, redirect_uri):
    code = oauth.get_code(calendar.resource, "list_events:read")
    before = snapshot()

    response = exchange(oauth, code, redirect_uri=redirect_uri)

    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_request", "invalid_grant"}
    assert snapshot() == before


def test_a_forged_code_is_refused(oauth, calendar):
    oauth.authorize_params(calendar.resource)  # the agent's PKCE pair
    response = exchange(oauth, "forged-code-" + "x" * 20)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()
