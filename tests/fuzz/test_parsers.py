"""hypothesis against the parsers: scope strings, policy files, redirect URIs, introspection's tool
context and the event API's body. Whatever comes in, the answer is a clear refusal or a correct
result, never a 500 or a traceback, and a refusal changes nothing."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import yaml
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from audit.models import AuditEvent, EventReceipt
from policies.decisions import decide, delegable_scopes
from policies.models import LOOPBACK_HOSTS, Agent, ToolAction
from policies.policy_file import PolicyError, apply
from policies.policy_file.reader import parse
from tests.conftest import FORM, form
from tests.fuzz.invariants import broken_invariants, changed_tables, state_fingerprint, state_tables
from tests.fuzz.strategies import any_value, policy_shaped, property_settings, redirect_uris
from tests.fuzz.world import build_world

SCOPE_TEXT = st.lists(
    st.sampled_from(
        ["list_events:read", "create_event:write", "send:write", "list_events:write", ":", "a:b:c"]
    )
    | st.text(max_size=15),
    max_size=6,
).map(" ".join) | st.text(max_size=60)


@pytest.fixture
def world(db):
    return build_world()


@property_settings
@given(text=SCOPE_TEXT)
def test_consent_grants_no_scope_beyond_what_was_asked_and_the_policy_allows(world, text):
    scopes = set(text.split())

    decision = decide(agent=world.agent, server=world.calendar.server, human=world.alice, scopes=scopes)

    assert decision.scopes <= scopes
    assert decision.scopes <= delegable_scopes(world.alice, world.calendar.server, world.agent)
    assert set(decision.refused) <= scopes
    assert decision.allowed == bool(decision.scopes)


@property_settings
@given(text=SCOPE_TEXT, tool_call=st.sampled_from(["list_events:read", "create_event:write", "send:write"]))
def test_a_token_is_allowed_a_tool_call_only_if_its_scope_and_its_delegation_name_it(world, text, tool_call):
    token = world.calendar.server.delegations.get(human=world.alice).access_tokens.get()
    token.scope = text  # whatever was stored, the token's own scope string is what decide() reads

    decision = decide(agent=world.agent, server=world.calendar.server, token=token, tool_call=tool_call)

    if decision.allowed:
        assert tool_call in text.split()
        assert tool_call in token.delegation.scopes


def _policy_texts():
    structures = policy_shaped | any_value
    return (
        structures.map(lambda value: yaml.safe_dump(value, allow_unicode=True))
        | structures.map(lambda value: json.dumps(value))
        | st.text(max_size=200)
    )


@property_settings
@given(text=_policy_texts())
@example(text="servers: [{name: x, resource: 'https://x.example/mcp', tools: [{name: t, actions: [a, a]}]}]")
@example(text="servers:\n  - &a {name: x}\n  - *a\n")
@example(text="{" * 200)
@example(
    text='{"servers": [{"name": "x", "resource": "https://x.example/mcp", "description": "\\ud83d\\udcc5",'
    ' "tools": []}]}'
)
@example(text='servers: [{name: x, resource: "https://x.example.com/mcp", description: "\\ud800\\0"}]')
@example(text="groups: [{name: g, members: [nobody], may_delegate: {calendar: ['list_events:read']}}]")
def test_a_policy_file_applies_cleanly_or_is_refused_with_reasons_and_changes_nothing(world, text):
    tables = state_tables()
    before = state_fingerprint(tables)

    try:
        apply(parse(text, source="fuzz.yaml"))
    except PolicyError as refusal:
        assert refusal.problems and all(isinstance(p, str) and p.strip() for p in refusal.problems)
        assert changed_tables(before, state_fingerprint(tables)) == []
    else:
        assert broken_invariants() == []


@property_settings
@given(uri=redirect_uris)
@example(uri="javascript:alert(1)")
@example(uri="http://localhost.evil.com/cb")
@example(uri="https://example.com/cb#frag")
@example(uri="http://[::1]:8080/cb")
def test_registration_takes_only_safe_redirect_uris(db, uri):
    agents = Agent.objects.count()

    response = Client().post(
        "/oauth/register/",
        json.dumps({"redirect_uris": [uri], "client_name": "fuzz", "token_endpoint_auth_method": "none"}),
        content_type="application/json",
    )

    assert response.status_code in (201, 400), response.content[:300]
    assert response.json()["error"] if response.status_code == 400 else response.json()["client_id"]
    if response.status_code == 400:
        assert Agent.objects.count() == agents
        return
    parts = urlsplit(uri)
    assert parts.scheme in ("https", "http")
    assert parts.scheme == "https" or parts.hostname in LOOPBACK_HOSTS
    assert parts.hostname and not parts.fragment


NAMES = st.sampled_from(["list_events", "create_event", "send", "read", "write", "delete_event"]) | st.text(
    max_size=30
)


@property_settings
@given(tool=NAMES, action=NAMES, token=st.sampled_from(["access-alice", "access-bob", "nonsense"]))
@example(tool="list_events", action="read", token="access-alice")
def test_introspection_with_any_tool_context_answers_and_never_allows_an_unknown_tool(
    world, tool, action, token
):
    response = Client().post(
        "/oauth/introspect/",
        form({"token": token, "tool": tool, "action": action}),
        FORM,
        HTTP_AUTHORIZATION=world.calendar.basic_auth(),
    )

    assert response.status_code in (200, 400), response.content[:300]
    body = response.json()
    if response.status_code == 400:
        assert body["error"] == "invalid_request"
        return
    if body.get("decision", {}).get("allowed"):
        assert ToolAction.objects.filter(
            tool__server=world.calendar.server, tool__name=tool, name=action
        ).exists()
        assert f"{tool}:{action}" in body["scope"].split()


def _event(**fields):
    return st.fixed_dictionaries(
        {
            "event_id": st.sampled_from(["e1", "e2", "e 3", ""]) | st.text(max_size=10),
            "token": st.sampled_from(["access-alice", "access-bob", "x"]) | any_value,
            "tool": NAMES,
            "action": NAMES,
            "outcome": st.sampled_from(["success", "error", "maybe"]),
            "duration_ms": st.integers(min_value=-5, max_value=2**40) | any_value,
            "arguments_digest": st.sampled_from(["0" * 64, "g" * 64]) | any_value,
            "occurred": st.sampled_from(["2026-11-26T12:00:00Z", "1071-05-19T11:30:22-17:02", "now"])
            | any_value,
        },
        optional={"detail": any_value, "reason": any_value, "arguments": any_value, **fields},
    )


LONE_SURROGATE_EVENT = {
    "event_id": "e\x00",
    "token": "access-alice",
    "tool": "list_events",
    "action": "read",
    "outcome": "success",
    "duration_ms": 1,
    "arguments_digest": "0" * 64,
    "occurred": "2026-11-26T12:00:00Z",
    "detail": {"note": "\ud800", "\ud800": "\x00"},
}


@property_settings
@given(body=st.fixed_dictionaries({"events": st.lists(_event(), max_size=3)}) | any_value)
@example(body={"events": [LONE_SURROGATE_EVENT]})
@example(body={"events": [{**LONE_SURROGATE_EVENT, "event_id": "e1"}]})
def test_the_event_api_records_a_batch_whole_or_refuses_it_whole(world, body):
    events, receipts = (
        AuditEvent.objects.filter(event_type="tool_call.result").count(),
        EventReceipt.objects.count(),
    )

    response = Client().post(
        "/api/audit/server-events/",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=world.calendar.basic_auth(),
    )

    assert response.status_code in (200, 400, 413), response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    recorded = AuditEvent.objects.filter(event_type="tool_call.result").count() - events
    if response.status_code == 200:
        assert recorded == len(response.json()["recorded"])
        assert EventReceipt.objects.count() - receipts == recorded
    else:
        assert response.json()["error"]
        assert (recorded, EventReceipt.objects.count()) == (0, receipts)
