"""
``mcp_console_auth`` against the real console (live server): the token verifier an MCP server
plugs into the SDK, and the tool-scope guard in front of the SDK's streamable HTTP app.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable

import httpx2
import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from examples.calendar_server import TOOL_SCOPES, build_app
from mcp_console_auth import ConsoleTokenVerifier, ConsoleUnavailable, ToolScopeGuard
from policies.models import Delegation
from policies.services import revoke_delegation
from tests.conftest import OAuthDriver, RegisteredServer

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
            await app.verifier.aclose()

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
