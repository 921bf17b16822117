"""The event API: MCP servers report tool-call results, linked to the token's delegation and human."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid

import pytest
from django.db import connections
from django.test import Client

from audit.api.server_events import EventBatchSerializer
from audit.ingest import MAX_BATCH_EVENTS, ingest_events
from audit.models import AuditEvent, EventReceipt
from policies.discovery import discovery_token
from policies.models import AccessToken, Delegation
from policies.services import revoke_delegation
from tests.conftest import RegisteredServer

URL = "/api/audit/server-events/"
DIGEST = hashlib.sha256(b'{"title":"Standup"}').hexdigest()


def event(token: str, **overrides) -> dict:
    return {
        "event_id": overrides.pop("event_id", str(uuid.uuid4())),
        "token": token,
        "tool": "create_event",
        "action": "write",
        "outcome": "success",
        "duration_ms": 42,
        "arguments_digest": DIGEST,
        "occurred": "2026-01-05T09:00:00Z",
        **overrides,
    }


def post(server: RegisteredServer | None, body, *, content_type="application/json", **headers):
    if server is not None:
        headers.setdefault("HTTP_AUTHORIZATION", server.basic_auth())
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return Client().post(URL, data, content_type=content_type, **headers)


def results():
    return AuditEvent.objects.filter(event_type="tool_call.result")


def assert_nothing_recorded():
    assert not results().exists()
    assert not EventReceipt.objects.exists()


@pytest.fixture
def token(oauth, calendar) -> str:
    return oauth.tokens(calendar.resource, "list_events:read create_event:write")["access_token"]


# --- What a report records ---------------------------------------------------------------------


def test_a_reported_result_is_recorded_and_linked_to_the_delegation_and_the_human(
    token, calendar, alice, agent
):
    reported = event(token, detail={"rows": 1})

    response = post(calendar, {"events": [reported]})

    assert response.status_code == 200, response.content
    assert response.json() == {"recorded": [reported["event_id"]], "duplicates": []}
    (recorded,) = results()
    delegation = Delegation.objects.get(human=alice, agent=agent)
    assert (recorded.outcome, recorded.tool, recorded.action) == ("allow", "create_event", "write")
    assert (recorded.human_username, recorded.agent_client_id, recorded.server_name) == (
        "alice",
        agent.client_id,
        "calendar",
    )
    assert recorded.delegation_id == delegation.pk
    assert recorded.token_checksum == hashlib.sha256(token.encode()).hexdigest()
    assert recorded.detail == {
        "event_id": reported["event_id"],
        "result": "success",
        "duration_ms": 42,
        "arguments_digest": DIGEST,
        "occurred_at_server": "2026-01-05T09:00:00+00:00",
        "server_detail": {"rows": 1},
    }
    assert EventReceipt.objects.get(server_id=calendar.server.pk).audit_event_id == recorded.pk


def test_the_bearer_token_itself_is_never_stored(token, calendar):
    post(calendar, {"events": [event(token)]})

    assert token not in repr(list(AuditEvent.objects.values()))
    assert token not in repr(list(EventReceipt.objects.values()))


def test_an_error_result_is_recorded_as_an_error_with_its_reason(token, calendar):
    post(calendar, {"events": [event(token, outcome="error", reason="tool_error")]})

    recorded = results().get()
    assert (recorded.outcome, recorded.reason, recorded.detail["result"]) == ("error", "tool_error", "error")


def test_a_token_checksum_links_the_event_as_the_token_does(token, calendar, alice):
    reported = event(token)
    del reported["token"]
    reported["token_checksum"] = hashlib.sha256(token.encode()).hexdigest()

    assert post(calendar, {"events": [reported]}).status_code == 200

    assert results().get().human_id == alice.pk


def test_a_batch_sent_twice_is_recorded_once_and_the_answer_names_the_duplicates(token, calendar):
    first, second = event(token), event(token, tool="list_events", action="read")
    assert post(calendar, {"events": [first]}).status_code == 200

    response = post(calendar, {"events": [first, second]})

    assert response.status_code == 200
    assert response.json() == {"recorded": [second["event_id"]], "duplicates": [first["event_id"]]}
    assert sorted(results().values_list("tool", flat=True)) == ["create_event", "list_events"]


def test_the_same_event_id_from_another_server_is_another_event(oauth, token, calendar, mail):
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]
    shared_id = "call-1"

    post(calendar, {"events": [event(token, event_id=shared_id)]})
    response = post(mail, {"events": [event(mail_token, event_id=shared_id, tool="send")]})

    assert response.json()["recorded"] == [shared_id]
    assert sorted(results().values_list("server_name", flat=True)) == ["calendar", "mail"]


def test_a_revoked_tokens_results_are_linked_through_the_event_that_issued_it(token, calendar, alice):
    delegation = Delegation.objects.get(human=alice)
    revoke_delegation(delegation, by=alice)
    assert not AccessToken.objects.filter(token_checksum=hashlib.sha256(token.encode()).hexdigest())

    response = post(calendar, {"events": [event(token)]})

    assert response.status_code == 200, response.content
    recorded = results().get()
    assert (recorded.human_username, recorded.delegation_id, recorded.token_id) == (
        "alice",
        delegation.pk,
        None,
    )
    assert recorded.token_checksum == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_sent_concurrently_is_recorded_once(token, calendar):
    batch = [event(token), event(token)]
    serializer = EventBatchSerializer(data={"events": batch})
    assert serializer.is_valid(), serializer.errors
    reported, answers, start = serializer.validated_data["events"], [], threading.Barrier(4)

    def send() -> None:
        try:
            start.wait()
            answers.append(ingest_events(calendar.server, reported))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 4
    assert results().count() == 2 == EventReceipt.objects.count()
    assert sum(len(answer.recorded) for answer in answers) == 2


# --- Refused: nothing recorded, a clear error, never a 500 --------------------------------------


def test_a_server_cannot_report_on_a_token_bound_to_another_server(token, calendar, mail):
    response = post(mail, {"events": [event(token)]})

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_events"
    assert body["events"][0]["errors"] == {"token": ["Not a token issued for this MCP server."]}
    assert_nothing_recorded()


def test_no_tool_call_can_be_reported_on_the_consoles_own_discovery_token(calendar, alice):
    with discovery_token(calendar.server, alice) as raw:
        while_live = post(calendar, {"events": [event(raw)]})
    once_gone = post(calendar, {"events": [event(raw)]})

    for response in (while_live, once_gone):
        assert response.status_code == 400
        assert response.json()["events"][0]["errors"] == {
            "token": ["Not a token issued for this MCP server."]
        }
    assert_nothing_recorded()


def test_one_refused_event_refuses_the_whole_batch_and_is_named(token, calendar):
    good, unknown = event(token), event("not-a-token")

    response = post(calendar, {"events": [good, unknown]})

    assert response.status_code == 400
    body = response.json()
    assert body["error_description"] == "1 of 2 events refused; nothing was recorded."
    assert [(e["index"], e["event_id"]) for e in body["events"]] == [(1, unknown["event_id"])]
    assert_nothing_recorded()


BAD_EVENTS = {
    "missing tool": lambda e: e.pop("tool"),
    "missing event_id": lambda e: e.pop("event_id"),
    "no token at all": lambda e: e.pop("token"),
    "token and checksum both": lambda e: e.update(token_checksum="a" * 64),
    "tool is a number": lambda e: e.update(tool=5),
    "tool name with a colon": lambda e: e.update(tool="create:event"),
    "duration as a string": lambda e: e.update(duration_ms="42"),
    "duration as a boolean": lambda e: e.update(duration_ms=True),
    "negative duration": lambda e: e.update(duration_ms=-1),
    "unknown outcome": lambda e: e.update(outcome="ok"),
    "digest not hex": lambda e: e.update(arguments_digest="z" * 64),
    "occurred not a date": lambda e: e.update(occurred="yesterday"),
    "detail not an object": lambda e: e.update(detail=["x"]),
    "detail too large": lambda e: e.update(detail={"blob": "x" * 3000}),
    "the arguments themselves": lambda e: e.update(arguments={"title": "Standup"}),
    "event_id too long": lambda e: e.update(event_id="e" * 129),
    "event_id with spaces": lambda e: e.update(event_id="call 1"),
    "event is not an object": lambda e: e.clear(),
}


@pytest.mark.parametrize("mistake", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_a_malformed_event_is_refused_with_its_field_and_nothing_is_recorded(token, calendar, mistake):
    good, bad = event(token), event(token)
    mistake(bad)
    if not bad:
        bad = "not an object"

    response = post(calendar, {"events": [good, bad]})

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_events"
    assert [e["index"] for e in body["events"]] == [1]
    assert body["events"][0]["errors"]
    assert_nothing_recorded()


def test_an_event_id_twice_in_one_batch_is_refused(token, calendar):
    response = post(calendar, {"events": [event(token, event_id="same"), event(token, event_id="same")]})

    assert response.status_code == 400
    assert response.json()["events"][0]["index"] == 1
    assert_nothing_recorded()


BAD_BODIES = {
    "malformed JSON": b'{"events": [',
    "nested too deeply": b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not UTF-8": b'{"events": "\xff"}',
    "not an object": [1, 2],
    "no events": {},
    "events not a list": {"events": {"event_id": "x"}},
    "empty batch": {"events": []},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_malformed_body_gets_a_json_error_and_nothing_is_recorded(calendar, body):
    response = post(calendar, body)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"]
    assert_nothing_recorded()


def test_more_events_than_the_limit_get_413(token, calendar):
    response = post(calendar, {"events": [event(token) for _ in range(MAX_BATCH_EVENTS + 1)]})

    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert_nothing_recorded()


def test_a_body_over_the_size_limit_gets_413(token, calendar, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post(calendar, {"events": [event(token, detail={"n": "x" * 1500}) for _ in range(10)]})

    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert_nothing_recorded()


def test_a_form_body_gets_415_in_the_same_error_shape(token, calendar):
    response = post(calendar, "events=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json()["error"] == "invalid_request"


def test_get_is_not_allowed(calendar):
    response = Client().get(URL, HTTP_AUTHORIZATION=calendar.basic_auth())

    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"


WRONG_CREDENTIALS = {
    "no credentials": {},
    "wrong secret": {"HTTP_AUTHORIZATION": "Basic " + "c3J2X3g6d3Jvbmc="},
    "bearer instead of basic": {"HTTP_AUTHORIZATION": "Bearer abc"},
    "garbage": {"HTTP_AUTHORIZATION": "Basic !!!"},
}


@pytest.mark.parametrize("headers", WRONG_CREDENTIALS.values(), ids=WRONG_CREDENTIALS.keys())
def test_wrong_server_credentials_get_401_and_nothing_is_recorded(token, calendar, headers):
    response = Client().post(
        URL, json.dumps({"events": [event(token)]}), content_type="application/json", **headers
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"] == 'Basic realm="audit events"'
    assert_nothing_recorded()


def test_a_deactivated_server_cannot_report(token, calendar):
    calendar.server.active = False
    calendar.server.save()

    assert post(calendar, {"events": [event(token)]}).status_code == 401
    assert_nothing_recorded()


def test_an_agent_token_is_not_a_server_credential(token, calendar):
    response = post(None, {"events": [event(token)]}, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401
    assert_nothing_recorded()
