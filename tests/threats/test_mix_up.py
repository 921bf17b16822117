"""Mix-up (RFC 9700 §4.4, RFC 9207): an agent talking to several authorization servers must learn
which one answered. Every authorization response, success or error, carries ``iss`` equal to the
metadata ``issuer``, character for character (MCP clients compare plain strings)."""

from django.test import Client

from tests.threats.support import redirect_query


def issuer() -> str:
    return Client().get("/.well-known/oauth-authorization-server").json()["issuer"]


def test_the_metadata_advertises_iss_in_authorization_responses(db):
    metadata = Client().get("/.well-known/oauth-authorization-server").json()
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["issuer"] == "http://testserver"


def test_a_code_response_names_the_issuer(oauth, calendar):
    response = oauth.consent(oauth.authorize_params(calendar.resource, "list_events:read"))
    query = redirect_query(response)
    assert "code" in query
    assert query["iss"] == issuer()


def test_a_denial_names_the_issuer(oauth, calendar):
    response = oauth.consent(oauth.authorize_params(calendar.resource, "list_events:read"), allow=False)
    query = redirect_query(response)
    assert query["error"] == "access_denied"
    assert query["iss"] == issuer()


def test_an_error_sent_before_consent_names_the_issuer(oauth, calendar):
    params = oauth.authorize_params("https://unknown.example.com/mcp", "list_events:read")
    query = redirect_query(oauth.browser.get("/oauth/authorize/", params))
    assert query["error"] == "invalid_target"
    assert query["iss"] == issuer()
