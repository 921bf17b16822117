"""Redirect URI manipulation and open redirects (RFC 9700 §4.1, §4.11): the code goes only to a
redirect URI the agent registered, matched exactly (a loopback port may vary, RFC 8252 §7.3).
A URI that is not registered gets the console's own error page: no redirect, nothing granted,
the hostile URI not echoed. Neither the consent form nor the login page redirects elsewhere."""

import pytest
from django.test import Client

from tests.conftest import ALICE_PASSWORD
from tests.threats.support import error_page_without_redirect, nothing_granted

EVIL = "attacker.example.net"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param(f"https://{EVIL}/callback", id="foreign-host"),
        pytest.param(f"http://127.0.0.1:53682@{EVIL}/callback", id="userinfo-trick"),
        pytest.param(f"http://127.0.0.1.{EVIL}:53682/callback", id="suffix-host"),
        pytest.param("http://127.0.0.1:53682/callback/../../evil", id="path-traversal"),
        pytest.param("http://127.0.0.1:53682/callback/extra", id="longer-path"),
        pytest.param("http://127.0.0.1:53682/Callback", id="path-case"),
        pytest.param(f"http://127.0.0.1:53682/callback?next=https://{EVIL}/", id="added-query"),
        pytest.param("http://127.0.0.1:53682/callback#fragment", id="fragment"),
        pytest.param("https://127.0.0.1:53682/callback", id="other-scheme"),
        pytest.param("http://localhost:53682/callback", id="localhost-for-127.0.0.1"),
        pytest.param("javascript:alert(document.domain)//", id="javascript"),
        pytest.param(f"//{EVIL}/callback", id="scheme-relative"),
    ],
)
def test_an_unregistered_redirect_uri_gets_an_error_page_and_nothing(oauth, calendar, redirect_uri):
    params = oauth.authorize_params(calendar.resource, "list_events:read", redirect_uri=redirect_uri)

    page = oauth.browser.get("/oauth/authorize/", params)

    assert error_page_without_redirect(page, reflected=EVIL)
    assert "form" not in (page.context or {})
    assert nothing_granted()


def test_a_loopback_redirect_may_use_any_port(oauth, calendar):
    params = oauth.authorize_params(
        calendar.resource, "list_events:read", redirect_uri="http://127.0.0.1:40111/callback"
    )
    assert oauth.browser.get("/oauth/authorize/", params).status_code == 200


def test_a_consent_form_tampered_to_a_foreign_redirect_uri_does_not_redirect_there(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    page = oauth.browser.get("/oauth/authorize/", params)
    data = {bf.name: bf.value() or "" for bf in page.context["form"] if bf.is_hidden}
    data.update(grant=["list_events:read"], allow="Allow", redirect_uri=f"https://{EVIL}/cb")

    response = oauth.browser.post("/oauth/authorize/", data)

    assert EVIL not in response.get("Location", "")
    assert nothing_granted()


def test_an_unknown_agent_never_redirects_anywhere(browser, calendar):
    page = browser.get(
        "/oauth/authorize/",
        {"response_type": "code", "client_id": "no-such-agent", "redirect_uri": f"https://{EVIL}/cb"},
    )
    assert error_page_without_redirect(page, reflected=EVIL)


@pytest.mark.parametrize("next_url", [f"https://{EVIL}/", f"//{EVIL}/", f"/\\{EVIL}/", f"https:{EVIL}"])
def test_the_login_page_is_no_open_redirect(alice, next_url):
    response = Client().post(
        "/accounts/login/?next=" + next_url, {"username": "alice", "password": ALICE_PASSWORD}
    )
    assert response.status_code == 302
    assert EVIL not in response["Location"]
