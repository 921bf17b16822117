"""The consent page: what the human sees, what they may grant, and what policy lets them. Attacks on
it (CSRF, clickjacking, tampered forms, scope escalation, mix-up) are in tests/threats/."""

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


def test_consenting_again_replaces_the_delegation_scopes_and_narrows_older_tokens(oauth, calendar):
    wide = oauth.tokens(calendar.resource, "list_events:read create_event:write")
    oauth.tokens(calendar.resource, "list_events:read", grant=["list_events:read"])
    assert Delegation.objects.count() == 1
    assert introspect(calendar, wide["access_token"]).json()["scope"] == "list_events:read"
