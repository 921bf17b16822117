"""The consent page: what the human sees, what they may grant, and what policy lets them."""

import pytest
from django.test import Client

from audit.models import AuditEvent
from policies.models import Delegation
from tests.conftest import REDIRECT_URI, introspect


def test_consent_page_names_agent_server_redirect_host_and_each_scope(oauth, calendar):
    page = oauth.browser.get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read create_event:write")
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "Research agent" in html
    assert "calendar" in html and calendar.resource in html
    assert "127.0.0.1:53682" in html
    assert "list_events — read" in html and "create_event — write" in html
    assert "high risk" in html


def test_consent_page_cannot_be_framed_or_cached(oauth, calendar):
    page = oauth.browser.get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read")
    )
    assert page["X-Frame-Options"] == "DENY"
    assert "no-store" in page["Cache-Control"] or "no-cache" in page["Cache-Control"]


def test_consent_post_without_csrf_token_is_refused(alice, agent, calendar, oauth):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    response = browser.post(
        "/oauth/authorize/",
        {**params, "scope": "list_events:read", "grant": ["list_events:read"], "allow": "Allow"},
    )
    assert response.status_code == 403
    assert not Delegation.objects.exists()


def test_anonymous_human_is_sent_to_login_first(agent, calendar, oauth):
    response = Client().get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read")
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_human_can_untick_a_requested_scope(oauth, calendar):
    tokens = oauth.tokens(
        calendar.resource, "list_events:read create_event:write", grant=["list_events:read"]
    )
    assert tokens["scope"] == "list_events:read"
    assert Delegation.objects.get().scope == "list_events:read"


def test_a_scope_the_policy_does_not_allow_is_shown_refused_and_never_granted(oauth, calendar, mail, alice):
    # alice may delegate calendar scopes only through "staff"; take create_event:write away.
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="create_event"))
    page = oauth.browser.get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read create_event:write")
    )
    rows = {row["scope"]: row["grantable"] for row in page.context["scope_rows"]}
    assert rows == {"list_events:read": True, "create_event:write": False}
    assert b"Your policy does not let you delegate this." in page.content

    # Even a forged form that ticks it gets only what the policy allows.
    tokens = oauth.tokens(
        calendar.resource,
        "list_events:read create_event:write",
        grant=["list_events:read", "create_event:write"],
    )
    assert tokens["scope"] == "list_events:read"


def test_a_human_with_no_delegable_scope_gets_a_page_that_can_only_deny(oauth, calendar, alice):
    alice.groups.clear()
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    page = oauth.browser.get("/oauth/authorize/", params)
    assert page.status_code == 200
    assert b'name="allow"' not in page.content
    denied = oauth.consent(params, grant=[], allow=False)
    assert "error=access_denied" in denied["Location"]
    event = AuditEvent.objects.get(event_type="consent.refused")
    assert event.human_username == "alice" and event.server_name == "calendar"


def test_request_without_scope_gets_the_servers_default_scopes_on_the_page(oauth, calendar):
    calendar.server.default_scopes = "list_events:read"
    calendar.server.save()
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource))
    assert [row["scope"] for row in page.context["scope_rows"]] == ["list_events:read"]
    assert oauth.tokens(calendar.resource)["scope"] == "list_events:read"


def test_request_without_scope_on_a_server_without_defaults_offers_all_its_scopes(oauth, calendar):
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource))
    assert {row["scope"] for row in page.context["scope_rows"]} == {"list_events:read", "create_event:write"}
    assert b'name="allow"' in page.content


def test_human_denial_redirects_with_access_denied_and_state(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    response = oauth.consent(params, allow=False)
    assert response["Location"].startswith(REDIRECT_URI)
    assert (
        "error=access_denied" in response["Location"] and f"state={params['state']}" in response["Location"]
    )
    assert not Delegation.objects.exists()


def test_authorization_response_carries_iss(oauth, calendar):
    response = oauth.consent(oauth.authorize_params(calendar.resource, "list_events:read"))
    assert "iss=http%3A%2F%2Ftestserver" in response["Location"]


def test_consenting_again_replaces_the_delegation_scopes_and_narrows_older_tokens(oauth, calendar):
    wide = oauth.tokens(calendar.resource, "list_events:read create_event:write")
    oauth.tokens(calendar.resource, "list_events:read", grant=["list_events:read"])
    assert Delegation.objects.count() == 1
    assert introspect(calendar, wide["access_token"]).json()["scope"] == "list_events:read"


def consent_form(oauth, calendar, **overrides) -> dict:
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    page = oauth.browser.get("/oauth/authorize/", params)
    data = {bf.name: bf.value() or "" for bf in page.context["form"] if bf.is_hidden}
    data.update(grant=["list_events:read"], allow="Allow")
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "tampered",
    [{"client_id": "no-such-agent"}, {"resource": "https://unknown.example.com/mcp"}],
    ids=["unknown-agent", "unknown-resource"],
)
def test_a_tampered_consent_form_is_refused_without_redirect(oauth, calendar, tampered):
    response = oauth.browser.post("/oauth/authorize/", consent_form(oauth, calendar, **tampered))
    assert response.status_code == 400
    assert "Location" not in response
    assert not Delegation.objects.exists()


def test_a_tampered_consent_form_with_a_foreign_redirect_uri_does_not_redirect_there(oauth, calendar):
    data = consent_form(oauth, calendar, redirect_uri="https://attacker.example.net/cb")
    response = oauth.browser.post("/oauth/authorize/", data)
    assert "attacker.example.net" not in response.get("Location", "")
    assert not Delegation.objects.exists()


def test_a_granted_scope_that_was_never_requested_is_ignored(oauth, calendar):
    data = consent_form(oauth, calendar, grant=["list_events:read", "create_event:write", "bogus:scope"])
    response = oauth.browser.post("/oauth/authorize/", data)
    assert response.status_code == 302
    assert Delegation.objects.get().scope == "list_events:read"
