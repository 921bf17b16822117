"""Token audience validation (RFC 8707; MCP authorization spec, "Token Audience Binding"): every
token is bound to exactly one registered, active MCP server, named by ``resource`` when the human
consents. A request naming no server, an unknown one, two of them, or later another one than the
human consented to is refused with ``invalid_target``; introspection names the one audience."""

import pytest

from policies.models import AccessToken
from tests.conftest import form, introspect
from tests.threats.support import nothing_granted, redirect_query, snapshot


@pytest.mark.parametrize("resource", [None, "https://unknown.example.com/mcp"], ids=["absent", "unknown"])
def test_an_authorization_without_a_known_resource_is_refused(oauth, calendar, resource):
    params = oauth.authorize_params(resource, "list_events:read")
    error = redirect_query(oauth.browser.get("/oauth/authorize/", params))
    assert error["error"] == "invalid_target"
    assert error["state"] == params["state"]
    assert nothing_granted()


def test_two_resources_are_refused_a_token_is_bound_to_one_server(oauth, calendar, mail):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    query = form(params) + "&" + form({"resource": mail.resource})
    assert redirect_query(oauth.browser.get("/oauth/authorize/?" + query))["error"] == "invalid_target"
    assert nothing_granted()


def test_an_inactive_server_is_an_unknown_target(oauth, calendar):
    calendar.server.active = False
    calendar.server.save()
    error = redirect_query(oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource)))
    assert error["error"] == "invalid_target"
    assert nothing_granted()


def test_a_code_cannot_be_exchanged_for_another_server_than_consented(oauth, calendar, mail):
    code = oauth.get_code(calendar.resource, "list_events:read")
    before = snapshot()

    response = oauth.exchange(code, mail.resource)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert snapshot() == before


def test_a_refresh_cannot_move_a_token_to_another_server(oauth, calendar, mail):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    before = snapshot()

    response = oauth.refresh(tokens["refresh_token"], mail.resource)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert snapshot() == before


def test_introspection_names_the_one_audience(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    answer = introspect(calendar, tokens["access_token"]).json()
    assert answer["aud"] == calendar.resource
    assert AccessToken.objects.get().delegation.server == calendar.server
