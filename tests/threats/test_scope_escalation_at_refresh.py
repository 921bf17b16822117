"""Scope escalation at refresh (RFC 6749 §6): an agent refreshing its token asks for more than the
human granted, for a scope of another server, or hopes a scope the policy or the agent's ceiling
has since taken away comes back. The token endpoint refuses wider scopes (``invalid_scope``), and
what a new token may use is always cut to the delegation, today's policy and the ceiling."""

import pytest

from tests.conftest import FORM, form, introspect
from tests.threats.support import snapshot


def refresh(oauth, refresh_token: str, resource: str, scope: str):
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": oauth.agent.client_id,
        "resource": resource,
        "scope": scope,
    }
    return oauth.client.post("/oauth/token/", form(data), FORM)


@pytest.mark.parametrize(
    "scope",
    ["list_events:read create_event:write", "create_event:write", "send:write", "list_events:read admin:all"],
    ids=["wider", "other-scope", "other-servers-scope", "unknown-scope"],
)
def test_a_refresh_asking_for_more_than_was_granted_is_refused(oauth, calendar, scope):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    before = snapshot()

    response = refresh(oauth, tokens["refresh_token"], calendar.resource, scope)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert snapshot() == before
    assert introspect(calendar, tokens["access_token"]).json()["scope"] == "list_events:read"


def test_a_refresh_may_narrow(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read create_event:write")
    response = refresh(oauth, tokens["refresh_token"], calendar.resource, "list_events:read")
    assert response.status_code == 200
    assert response.json()["scope"] == "list_events:read"


def test_a_scope_the_policy_took_away_does_not_come_back_with_a_refresh(oauth, calendar, alice):
    tokens = oauth.tokens(calendar.resource, "list_events:read create_event:write")
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="create_event"))

    fresh = oauth.refresh(tokens["refresh_token"], calendar.resource).json()

    answer = introspect(calendar, fresh["access_token"], tool="create_event", action="write").json()
    assert answer["scope"] == "list_events:read"
    assert answer["decision"] == {
        "tool": "create_event",
        "action": "write",
        "allowed": False,
        "reason": "scope_missing",
    }


def test_a_scope_above_a_lowered_ceiling_does_not_come_back_with_a_refresh(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read create_event:write")
    agent = oauth.agent
    agent.has_scope_ceiling = True
    agent.save()
    agent.scope_ceiling.set(calendar.server.tools.get(name="list_events").actions.all())

    fresh = oauth.refresh(tokens["refresh_token"], calendar.resource).json()

    assert introspect(calendar, fresh["access_token"]).json()["scope"] == "list_events:read"
    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}  # rotated away
