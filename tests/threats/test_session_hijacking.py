"""Session hijacking (MCP security best practices, "Session Hijacking": session ids must not be used
for authentication, and are bound to the user). At an MCP server protected by ``mcp_console_auth``
an ``Mcp-Session-Id`` never stands in for a token: without a live token bound to that server the
request is refused before the SDK looks the session up. At the console, a human's session cookie
is HttpOnly and SameSite, and a waiting authorization belongs to the human whose session started it."""

import json

from django.conf import settings
from django.test import Client

from policies.models import Delegation
from policies.services import revoke_delegation
from tests.api_support import person
from tests.conftest import ALICE_PASSWORD
from tests.test_mcp_console_auth import calendar_app, request, tool_call
from tests.threats.support import events


def with_session(app, token: str | None, session_id: str):
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Session-Id": session_id,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return request(
        app, "POST", "/mcp", content=json.dumps(tool_call("list_events")).encode(), headers=headers
    )


def test_an_mcp_session_id_is_no_credential(live_console, oauth, alice, calendar):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    revoke_delegation(Delegation.objects.get(), by=alice)
    session_id = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # as stolen from a log or a proxy

    anonymous = with_session(calendar_app(live_console, calendar), None, session_id)
    revoked = with_session(calendar_app(live_console, calendar), token, session_id)

    assert anonymous.status_code == 401 and revoked.status_code == 401
    assert 'error="invalid_token"' in revoked.headers["www-authenticate"]
    checks = events("introspection") + events("tool_call.decision")
    assert checks and {e.outcome for e in checks} == {"deny"}  # the console was asked, and said no


def test_the_console_session_cookie_is_httponly_and_samesite(alice):
    response = Client().post("/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD})

    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


def test_a_waiting_authorization_belongs_to_the_human_who_started_it(oauth, alice, calendar):
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.approval_risk = "high"
    policy.save()
    waiting_page = oauth.consent(oauth.authorize_params(calendar.resource, "create_event:write"))["Location"]
    intruder = Client()
    intruder.force_login(person("mallory"))

    assert intruder.get(waiting_page).status_code == 404
    assert intruder.post(waiting_page).status_code == 404
    assert Delegation.objects.get().status == Delegation.Status.PENDING
