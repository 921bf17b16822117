"""Introspection for MCP servers with tool context: the decision, its reason, and its audit event."""

import pytest

from audit.models import AuditEvent
from policies.models import AccessToken, Delegation
from tests.conftest import introspect


@pytest.fixture
def read_token(oauth, calendar) -> str:
    return oauth.tokens(calendar.resource, "list_events:read", grant=["list_events:read"])["access_token"]


def test_tool_call_within_the_granted_scopes_is_allowed_and_audited(read_token, calendar, alice, oauth):
    answer = introspect(calendar, read_token, tool="list_events", action="read").json()
    assert answer["active"] is True
    assert answer["decision"] == {"tool": "list_events", "action": "read", "allowed": True, "reason": "ok"}
    event = AuditEvent.objects.filter(event_type="tool_call.decision").latest("id")
    assert (event.outcome, event.reason, event.human_username, event.agent_client_id) == (
        "allow",
        "ok",
        "alice",
        oauth.agent.client_id,
    )
    assert (event.server_name, event.tool, event.action) == ("calendar", "list_events", "read")
    assert event.delegation_id == Delegation.objects.get().pk
    assert event.token_id == AccessToken.objects.get(delegation__isnull=False).pk


def test_tool_call_outside_the_granted_scopes_is_denied_with_scope_missing(read_token, calendar):
    answer = introspect(calendar, read_token, tool="create_event", action="write").json()
    assert answer["active"] is True
    assert answer["decision"]["allowed"] is False
    assert answer["decision"]["reason"] == "scope_missing"
    event = AuditEvent.objects.filter(event_type="tool_call.decision").latest("id")
    assert (event.outcome, event.reason, event.tool) == ("deny", "scope_missing", "create_event")


def test_expired_token_is_inactive_and_the_reason_is_audited(read_token, calendar):
    AccessToken.objects.update(expires="2000-01-01T00:00:00Z")
    assert introspect(calendar, read_token, tool="list_events", action="read").json() == {"active": False}
    assert AuditEvent.objects.latest("id").reason == "expired"


def test_foreign_audience_is_inactive_and_audited_as_wrong_audience(read_token, mail):
    assert introspect(mail, read_token).json() == {"active": False}
    event = AuditEvent.objects.latest("id")
    assert (event.outcome, event.reason, event.server_name) == ("deny", "wrong_audience", "mail")


def test_unknown_token_is_inactive(calendar, db):
    assert introspect(calendar, "not-a-token").json() == {"active": False}
    assert AuditEvent.objects.latest("id").reason == "unknown_token"


def test_deactivated_human_makes_tokens_inactive(read_token, calendar, alice):
    alice.is_active = False
    alice.save()
    assert introspect(calendar, read_token).json() == {"active": False}


def test_introspection_answers_are_not_cacheable(read_token, calendar):
    assert introspect(calendar, read_token)["Cache-Control"] == "no-store"


def test_policy_narrowing_takes_effect_at_the_next_introspection(oauth, calendar, alice):
    token = oauth.tokens(calendar.resource, "list_events:read create_event:write")["access_token"]
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="create_event"))

    answer = introspect(calendar, token, tool="create_event", action="write").json()
    assert answer["scope"] == "list_events:read"
    assert answer["decision"]["reason"] == "scope_missing"

    alice.groups.clear()
    assert introspect(calendar, token).json() == {"active": False}
    assert AuditEvent.objects.latest("id").reason == "no_usable_scope"


def test_a_tool_the_server_does_not_have_is_denied_as_unknown_tool(read_token, calendar):
    answer = introspect(calendar, read_token, tool="format_disk", action="write").json()
    assert answer["active"] is True
    assert answer["decision"]["reason"] == "unknown_tool"
