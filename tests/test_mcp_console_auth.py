"""
``mcp_console_auth`` against the real console (live server): the token verifier an MCP server
plugs into the SDK, and the tool-scope guard in front of the SDK's streamable HTTP app.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Awaitable

import httpx2
import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from examples.calendar_server import TOOL_SCOPES, build_app
from mcp_console_auth import (
    ConsoleTokenVerifier,
    ConsoleUnavailable,
    EventReporter,
    ToolScopeGuard,
    arguments_digest,
)
from policies.models import Delegation
from policies.services import revoke_delegation
from tests.conftest import OAuthDriver, RegisteredServer
from tests.support import free_loopback_port

pytestmark = pytest.mark.timeout(60)


def run(awaitable: Awaitable):
    return asyncio.run(awaitable)


def verifier_for(
    console_url: str, server: RegisteredServer, resource: str | None = None
) -> ConsoleTokenVerifier:
    return ConsoleTokenVerifier(
        console_url, server.client_id, server.client_secret, resource or server.resource
    )


async def verify(verifier: ConsoleTokenVerifier, token: str):
    try:
        return await verifier.verify_token(token)
    finally:
        await verifier.aclose()


async def check(verifier: ConsoleTokenVerifier, token: str, scope: str):
    try:
        return await verifier.check_tool_call(token, scope)
    finally:
        await verifier.aclose()


# --- ConsoleTokenVerifier ---------------------------------------------------------------------


def test_verifier_reads_the_issuer_and_introspection_endpoint_from_the_console(live_console, calendar):
    verifier = verifier_for(live_console, calendar)
    assert verifier.issuer == live_console
    assert verifier.metadata.introspection_endpoint == f"{live_console}/oauth/introspect/"
    settings = verifier.auth_settings()
    assert str(settings.issuer_url) == live_console  # no trailing slash: clients compare strings
    assert str(settings.resource_server_url) == calendar.resource


def test_verifier_accepts_a_live_token_bound_to_its_server(live_console, oauth: OAuthDriver, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    access = run(verify(verifier_for(live_console, calendar), tokens["access_token"]))

    assert access.token == tokens["access_token"]
    assert access.client_id == oauth.agent.client_id
    assert access.scopes == ["list_events:read"]
    assert access.resource == calendar.resource
    assert access.subject == str(alice.pk)
    assert isinstance(access.expires_at, int)
    assert access.claims["username"] == "alice"
    assert access.claims["act"] == {"sub": oauth.agent.client_id}
    assert access.claims["iss"] == live_console


def test_verifier_refuses_a_token_issued_for_another_mcp_server(
    live_console, oauth: OAuthDriver, calendar, mail
):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    assert run(verify(verifier_for(live_console, mail), tokens["access_token"])) is None


def test_verifier_refuses_an_active_token_whose_audience_is_not_its_resource(live_console, oauth, calendar):
    # Misconfigured: calendar's credentials, another resource. The console says active (the token
    # is bound to calendar) but the verifier must not accept a token meant for someone else.
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    verifier = verifier_for(live_console, calendar, resource="https://impostor.example.com/mcp")

    assert run(verify(verifier, tokens["access_token"])) is None


def test_verifier_refuses_unknown_and_revoked_tokens(live_console, oauth: OAuthDriver, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    revoke_delegation(Delegation.objects.get(human=alice), by=alice)

    assert run(verify(verifier_for(live_console, calendar), tokens["access_token"])) is None
    assert run(verify(verifier_for(live_console, calendar), "not-a-token")) is None


def test_verifier_with_wrong_server_credentials_accepts_nothing(live_console, oauth: OAuthDriver, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    verifier = ConsoleTokenVerifier(live_console, calendar.client_id, "wrong-secret", calendar.resource)

    assert run(verify(verifier, tokens["access_token"])) is None


def test_verifier_fails_at_start_when_the_console_cannot_be_reached(calendar):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ConsoleUnavailable, match="metadata"):
        verifier_for(nobody, calendar)


def test_tool_call_check_carries_the_consoles_decision(live_console, oauth: OAuthDriver, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    verifier = verifier_for(live_console, calendar)

    granted = run(check(verifier, tokens["access_token"], "list_events:read"))
    missing = run(check(verifier, tokens["access_token"], "create_event:write"))

    assert (granted.allowed, granted.reason) == (True, "ok")
    assert (missing.allowed, missing.reason) == (False, "scope_missing")
    assert missing.access_token.scopes == ["list_events:read"]
    decisions = AuditEvent.objects.filter(event_type="tool_call.decision", human_id=alice.pk)
    assert sorted(decisions.values_list("tool", "outcome")) == [
        ("create_event", "deny"),
        ("list_events", "allow"),
    ]


# --- ToolScopeGuard, in front of the example server's SDK app ---------------------------------


def calendar_app(live_console: str, calendar: RegisteredServer) -> ToolScopeGuard:
    """The example calendar server's ASGI app, in process, at the calendar fixture's resource."""
    return build_app(live_console, calendar.client_id, calendar.client_secret, "https://calendar.example.com")


def tool_call(name: str, arguments: dict | None = None) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {}},
    }


def request(app: ToolScopeGuard, method: str, path: str, **kwargs) -> httpx2.Response:
    async def send() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        try:
            async with httpx2.AsyncClient(
                transport=transport, base_url="https://calendar.example.com"
            ) as client:
                return await client.request(method, path, **kwargs)
        finally:
            await app.aclose()

    return run(send())


def post_mcp(app: ToolScopeGuard, body: bytes | dict | list, token: str | None = None) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(app, "POST", "/mcp", content=content, headers=headers)


def test_protected_resource_metadata_names_the_console_and_the_tool_scopes(live_console, calendar):
    response = request(
        calendar_app(live_console, calendar), "GET", "/.well-known/oauth-protected-resource/mcp"
    )

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == calendar.resource
    console_issuer = httpx2.get(f"{live_console}/.well-known/oauth-authorization-server").json()["issuer"]
    assert metadata["authorization_servers"] == [console_issuer] == [live_console]
    assert metadata["scopes_supported"] == sorted(TOOL_SCOPES.values())


def test_a_tool_call_outside_the_tokens_scopes_gets_403_insufficient_scope(
    live_console, oauth, alice, calendar
):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    response = post_mcp(
        calendar_app(live_console, calendar), tool_call("create_event"), tokens["access_token"]
    )

    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith(
        'Bearer error="insufficient_scope", scope="create_event:write", '
        'resource_metadata="https://calendar.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    assert AuditEvent.objects.get(event_type="tool_call.decision").reason == "scope_missing"


def test_a_batch_names_every_missing_scope_in_one_challenge(live_console, oauth, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    batch = [tool_call("create_event"), tool_call("list_events"), tool_call("delete_event")]

    response = post_mcp(calendar_app(live_console, calendar), batch, tokens["access_token"])

    assert response.status_code == 403
    assert 'scope="create_event:write delete_event:write"' in response.headers["www-authenticate"]


def test_a_tool_with_no_declared_scope_cannot_be_called(live_console, oauth, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    response = post_mcp(
        calendar_app(live_console, calendar), tool_call("drop_calendar"), tokens["access_token"]
    )

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Tool 'drop_calendar' has no declared scope on this server."
    assert not AuditEvent.objects.filter(event_type="tool_call.decision").exists()


def test_a_body_the_guard_cannot_read_is_refused(live_console, oauth, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    response = post_mcp(
        calendar_app(live_console, calendar), b'{"method": "tools/call", ', tokens["access_token"]
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


def test_a_tool_call_without_a_token_gets_the_sdks_401_challenge(live_console, calendar):
    response = post_mcp(calendar_app(live_console, calendar), tool_call("list_events"))

    assert response.status_code == 401
    assert (
        'resource_metadata="https://calendar.example.com/.well-known/oauth-protected-resource/mcp"'
        in response.headers["www-authenticate"]
    )


def test_a_revoked_token_gets_401_not_a_step_up(live_console, oauth, alice: User, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    revoke_delegation(Delegation.objects.get(human=alice), by=alice)

    response = post_mcp(
        calendar_app(live_console, calendar), tool_call("list_events"), tokens["access_token"]
    )

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# --- EventReporter: tool-call results to the console's audit trail ----------------------------


def reporter_for(
    console_url: str, server: RegisteredServer, secret: str | None = None, **options
) -> EventReporter:
    return EventReporter(console_url, server.client_id, secret or server.client_secret, **options)


def report(reporter: EventReporter, token: str, scope: str = "list_events:read", **arguments) -> str:
    return reporter.report(token=token, scope=scope, outcome="success", duration_ms=7, arguments=arguments)


async def flush_and_close(reporter: EventReporter) -> None:
    try:
        await reporter.flush()
    finally:
        await reporter.aclose()


def reported_results() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type="tool_call.result").order_by("id"))


def test_the_reporter_sends_results_in_batches_linked_to_the_human(live_console, oauth, alice, calendar):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    reporter = reporter_for(live_console, calendar, batch_size=2)
    ids = [report(reporter, token, day=str(day)) for day in range(3)]

    run(flush_and_close(reporter))

    assert reporter.pending == 0
    results = reported_results()
    assert [event.detail["event_id"] for event in results] == ids
    assert {(event.human_username, event.tool, event.action) for event in results} == {
        ("alice", "list_events", "read")
    }
    assert results[0].detail["arguments_digest"] == arguments_digest({"day": "0"})


def test_results_the_console_could_not_take_are_resent_with_the_same_event_ids(
    live_console, oauth, alice, calendar
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    reporter = reporter_for(live_console, calendar)
    ids = [report(reporter, token), report(reporter, token)]
    endpoint, reporter.endpoint = (
        reporter.endpoint,
        f"http://127.0.0.1:{free_loopback_port()}/api/audit/server-events/",
    )

    run(reporter.flush())
    assert reporter.pending == 2 and not reported_results()

    reporter.endpoint = endpoint
    run(flush_and_close(reporter))
    assert [event.detail["event_id"] for event in reported_results()] == ids


def test_with_wrong_credentials_the_results_stay_buffered(live_console, oauth, alice, calendar):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    reporter = reporter_for(live_console, calendar, secret="not-the-secret")
    report(reporter, token)

    run(flush_and_close(reporter))

    assert reporter.pending == 1
    assert not reported_results()


def test_a_result_the_console_refuses_is_dropped_and_the_others_recorded(
    live_console, oauth, alice, calendar, mail
):
    calendar_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]
    reporter = reporter_for(live_console, calendar)
    good = report(reporter, calendar_token)
    report(reporter, mail_token, "send:write")  # not a token of this server

    run(flush_and_close(reporter))

    assert reporter.pending == 0
    assert [event.detail["event_id"] for event in reported_results()] == [good]


def test_the_arguments_digest_is_over_canonical_json():
    assert arguments_digest({"b": 1, "a": "é"}) == hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()
    assert arguments_digest({"a": "é", "b": 1}) == arguments_digest({"b": 1, "a": "é"})


def test_the_guard_sends_the_buffered_results_when_the_server_shuts_down(
    live_console, oauth, alice, calendar
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    app = calendar_app(live_console, calendar)
    event_id = report(app.reporter, token)  # outside any event loop: buffered, not sent

    async def serve_then_shut_down() -> list[str]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict:
            return incoming.pop(0)

        async def send(message: dict) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        return sent

    assert run(serve_then_shut_down()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.reporter.pending == 0
    assert [event.detail["event_id"] for event in reported_results()] == [event_id]
