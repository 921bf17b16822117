"""PKCE downgrade (RFC 9700 §2.1.1, §4.8): an agent, or an attacker rewriting its request, asks
for "plain" PKCE, for none, or leaves the method out (which RFC 7636 reads as "plain"). Each is
refused before the human is even asked; only S256 is advertised."""

import pytest
from django.test import Client

from policies.models import AccessToken
from tests.threats.support import nothing_granted, redirect_query


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"code_challenge_method": "plain"}, id="plain"),
        pytest.param({"code_challenge_method": None}, id="method-omitted-means-plain"),
        pytest.param({"code_challenge_method": "s256"}, id="lower-case"),
        pytest.param({"code_challenge": None, "code_challenge_method": None}, id="no-pkce"),
    ],
)
def test_a_downgraded_pkce_request_is_refused_before_consent(oauth, calendar, change):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    if "code_challenge_method" in change and change["code_challenge_method"] == "plain":
        params["code_challenge"] = oauth.verifier  # plain: the challenge is the verifier itself
    for name, value in change.items():
        if value is None:
            params.pop(name)
        else:
            params[name] = value

    response = oauth.browser.get("/oauth/authorize/", params)

    error = redirect_query(response)
    assert error["error"] == "invalid_request"
    assert error["state"] == params["state"]
    assert "form" not in (response.context or {})
    assert nothing_granted()


def test_only_s256_is_advertised(db):
    metadata = Client().get("/.well-known/oauth-authorization-server").json()
    assert metadata["code_challenge_methods_supported"] == ["S256"]


def test_the_wrong_verifier_gets_no_token(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")

    response = oauth.exchange(code, calendar.resource, verifier="x" * 50)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()
