"""Scope escalation at consent: the human's own consent form, tampered with (a browser's dev tools
or a malicious extension), grants a scope the policy forbids, one above the agent's ceiling, one
never requested, one of another server, or one that needs an approver as if it did not. The
consent POST re-asks ``decide()`` about exactly what was ticked: nothing beyond policy is granted,
nothing skips an approver, and a tampered agent or server gets no redirect at all."""

import pytest

from policies.models import Delegation
from tests.conftest import introspect
from tests.threats.support import events, nothing_granted, redirect_query

BOTH = "list_events:read create_event:write"


def consent_form(oauth, calendar, scope: str = "list_events:read", **overrides) -> dict:
    params = oauth.authorize_params(calendar.resource, scope)
    page = oauth.browser.get("/oauth/authorize/", params)
    data = {bf.name: bf.value() or "" for bf in page.context["form"] if bf.is_hidden}
    data.update(grant=scope.split(), allow="Allow")
    data.update(overrides)
    return data


def test_a_scope_the_policy_forbids_is_shown_refused_and_never_granted(oauth, calendar, alice):
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="create_event"))
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource, BOTH))
    rows = {row["scope"]: row["grantable"] for row in page.context["scope_rows"]}
    assert rows == {"list_events:read": True, "create_event:write": False}

    tokens = oauth.tokens(calendar.resource, BOTH, grant=BOTH.split())  # the forged tick

    assert tokens["scope"] == "list_events:read"
    assert Delegation.objects.get().scope == "list_events:read"


def test_a_scope_above_the_agents_ceiling_is_never_granted(oauth, calendar):
    oauth.agent.has_scope_ceiling = True
    oauth.agent.save()
    oauth.agent.scope_ceiling.set(calendar.server.tools.get(name="list_events").actions.all())

    tokens = oauth.tokens(calendar.resource, BOTH, grant=BOTH.split())

    assert tokens["scope"] == "list_events:read"
    assert introspect(calendar, tokens["access_token"]).json()["scope"] == "list_events:read"


def test_only_forbidden_scopes_ticked_grants_nothing_and_is_recorded(oauth, calendar, alice):
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="create_event"))

    response = oauth.browser.post("/oauth/authorize/", consent_form(oauth, calendar, "create_event:write"))

    assert redirect_query(response)["error"] == "access_denied"
    assert nothing_granted()
    (event,) = events("consent.refused")
    assert (event.outcome, event.reason) == ("deny", "scope_not_delegable")


@pytest.mark.parametrize(
    "extra",
    ["create_event:write", "send:write", "bogus:scope"],
    ids=["not-requested", "other-server", "unknown"],
)
def test_a_ticked_scope_that_was_never_requested_is_ignored(oauth, calendar, extra):
    data = consent_form(oauth, calendar, grant=["list_events:read", extra])

    assert oauth.browser.post("/oauth/authorize/", data).status_code == 302

    assert Delegation.objects.get().scope == "list_events:read"


def test_a_scope_that_needs_an_approver_cannot_be_forged_past_one(oauth, calendar, alice):
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.approval_risk = "high"
    policy.save()
    data = consent_form(oauth, calendar, BOTH, needs_approval="", approved="1")

    response = oauth.browser.post("/oauth/authorize/", data)

    assert "/oauth/authorize/pending/" in response["Location"]  # no code: the human waits
    delegation = Delegation.objects.get()
    assert (delegation.status, delegation.scopes) == (Delegation.Status.PENDING, set(BOTH.split()))
    assert not delegation.access_tokens.exists()


@pytest.mark.parametrize(
    "tampered",
    [{"client_id": "no-such-agent"}, {"resource": "https://unknown.example.com/mcp"}],
    ids=["unknown-agent", "unknown-resource"],
)
def test_a_tampered_agent_or_server_is_refused_without_redirect(oauth, calendar, tampered):
    response = oauth.browser.post("/oauth/authorize/", consent_form(oauth, calendar, **tampered))
    assert response.status_code == 400
    assert "Location" not in response
    assert nothing_granted()
