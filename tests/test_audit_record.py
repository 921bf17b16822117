"""audit.events.record: what an event keeps about its actors, token and request."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory

from audit.events import record
from audit.middleware import RequestMetadataMiddleware
from audit.models import AuditEvent
from tests.test_settings_deploy import PRODUCTION, manage

FORM = "application/x-www-form-urlencoded"
pytestmark = pytest.mark.django_db


def test_an_agent_alone_is_the_chain_of_actors(agent):
    event = record("tool_call.decision", outcome="allow", agent=agent)
    assert event.actors == [{"type": "agent", "id": agent.client_id}]


def test_an_explicit_chain_of_actors_is_kept_outermost_first(agent):
    chain = [{"type": "agent", "id": "orchestrator"}, {"type": "agent", "id": agent.client_id}]
    event = record("tool_call.decision", outcome="allow", agent=agent, actors=chain)
    assert AuditEvent.objects.get(pk=event.pk).actors == chain


def test_an_event_keeps_the_token_checksum_never_the_token(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    from policies.models import AccessToken

    token = AccessToken.objects.get()
    event = record("token.revoked", outcome="allow", token=token)
    stored = AuditEvent.objects.filter(pk=event.pk).values().get()
    assert stored["token_id"] == token.pk
    assert stored["token_checksum"] == token.token_checksum and len(token.token_checksum) == 64
    assert tokens["access_token"] not in str(stored)


def test_introspection_event_carries_the_callers_request_id_and_echoes_it(calendar):
    client = Client(HTTP_X_REQUEST_ID="trace-42.a:b")
    response = client.post(
        "/oauth/introspect/",
        "token=no-such-token",
        FORM,
        HTTP_AUTHORIZATION=calendar.basic_auth(),
        HTTP_USER_AGENT="calendar-mcp/1.0",
    )
    assert response.status_code == 200
    assert response["X-Request-ID"] == "trace-42.a:b"
    event = AuditEvent.objects.get(event_type="introspection")
    assert (event.correlation_id, event.user_agent, event.client_ip) == (
        "trace-42.a:b",
        "calendar-mcp/1.0",
        "127.0.0.1",
    )


@pytest.mark.parametrize("header", ["", "has space", "x" * 65, "line\nbreak", "=cmd()", "semi;colon"])
def test_a_malformed_request_id_is_replaced_by_a_generated_one(calendar, header):
    response = Client(HTTP_X_REQUEST_ID=header).post(
        "/oauth/introspect/",
        "token=t",
        "application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=calendar.basic_auth(),
    )
    event = AuditEvent.objects.get(event_type="introspection")
    assert event.correlation_id == response["X-Request-ID"]
    assert event.correlation_id != header and len(event.correlation_id) == 32


def test_events_recorded_during_one_request_share_its_correlation_id():
    def view(request):
        from django.http import HttpResponse

        record("first", outcome="allow")
        record("second", outcome="allow")  # no request passed: the middleware's context is used
        return HttpResponse()

    response = RequestMetadataMiddleware(view)(RequestFactory().get("/"))
    first, second = AuditEvent.objects.filter(event_type__in=["first", "second"]).order_by("id")
    assert first.correlation_id == second.correlation_id == response["X-Request-ID"]
    record("later", outcome="allow")
    assert AuditEvent.objects.get(event_type="later").correlation_id == ""


def _ip(settings, remote: str, forwarded: str | None, trusted: list[str]) -> str | None:
    settings.AUDIT_TRUSTED_PROXIES = trusted
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return record("x", outcome="allow", request=RequestFactory().get("/", **headers)).client_ip


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        # No trusted proxy: the peer is the client, whatever it claims.
        ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),
        # An untrusted peer cannot speak for anyone.
        ("203.0.113.9", "198.51.100.1", ["10.0.0.0/8"], "203.0.113.9"),
        # Behind one trusted proxy: the address it appended.
        ("10.0.0.5", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        # A client-forged left part is ignored: the right-most untrusted hop wins.
        ("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.7", ["10.0.0.0/8"], "198.51.100.1"),
        # Every hop trusted: the left-most one.
        ("10.0.0.5", "10.0.0.9, 10.0.0.7", ["10.0.0.0/8"], "10.0.0.9"),
        # Garbage ends the walk at the last address we could trust.
        ("10.0.0.5", "198.51.100.1, not-an-ip", ["10.0.0.0/8"], "10.0.0.5"),
        ("::1", "2001:db8::1", ["::1/128"], "2001:db8::1"),
        ("10.0.0.5", None, ["10.0.0.0/8"], "10.0.0.5"),
    ],
)
def test_client_ip_honours_only_trusted_proxies(settings, remote, forwarded, trusted, expected):
    assert _ip(settings, remote, forwarded, trusted) == expected


def test_a_checksum_alone_links_an_event_to_a_token_whose_row_is_gone():
    event = record("tool_call.result", outcome="allow", token_checksum="c" * 64)
    assert (event.token_id, event.token_checksum) == (None, "c" * 64)


def test_a_malformed_trusted_proxy_setting_stops_the_console_at_start():
    result = manage("check", TRUSTED_PROXIES="10.0.0.0/8,10.0.0.0/33", **PRODUCTION)
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
