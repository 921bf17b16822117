"""Every protocol endpoint answers malformed input with its RFC's error JSON or a 4xx, never a 500,
and changes nothing."""

import base64
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEvent
from policies.models import AccessToken, Agent
from tests.conftest import FORM, form

POST_ENDPOINTS = ["/oauth/token/", "/oauth/revoke/", "/oauth/introspect/", "/oauth/register/"]
OVERSIZED = b"token=" + b"a" * (300 * 1024)


def state_snapshot() -> tuple[int, int, int]:
    return (
        Agent.objects.count(),
        AccessToken.objects.count(),
        AuditEvent.objects.exclude(event_type="introspection").count(),
    )


def assert_client_error(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if response["Content-Type"].startswith("application/json"):
        body = json.loads(response.content)
        assert "error" in body


@pytest.fixture
def any_client(db):
    return Client(raise_request_exception=False)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"", FORM),
        (b"\xff\xfe\xfa=\xc3\x28", FORM),
        (b"grant_type=authorization_code&grant_type=refresh_token", FORM),
        (b"token=a&token=b", FORM),
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"\x00\x01\x02", "application/octet-stream"),
        (b"token=abc", "text/plain"),
        (OVERSIZED, FORM),
    ],
    ids=[
        "empty",
        "non-utf8",
        "repeated-grant",
        "repeated-token",
        "bad-json",
        "json-array",
        "binary",
        "text",
        "oversized",
    ],
)
def test_malformed_post_gets_a_client_error_and_changes_nothing(
    any_client, calendar, path, body, content_type
):
    before = state_snapshot()
    response = any_client.generic(
        "POST", path, body, content_type=content_type, HTTP_AUTHORIZATION=calendar.basic_auth()
    )
    assert_client_error(response)
    assert state_snapshot() == before


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_wrong_method_is_405_or_a_client_error(any_client, path):
    assert_client_error(any_client.put(path, b"x=1", content_type=FORM))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "response_type=code",
        "client_id=unknown&response_type=code&redirect_uri=http://127.0.0.1/cb",
        "client_id=%ff%fe&response_type=code",
        "client_id=a&client_id=b&response_type=code",
        "client_id=" + "x" * 5000,
    ],
    ids=["empty", "no-client", "unknown-client", "non-utf8", "repeated-client", "huge"],
)
def test_malformed_authorization_requests_get_an_error_page_not_a_redirect(browser, query):
    response = browser.get("/oauth/authorize/?" + query)
    assert_client_error(response)
    assert "Location" not in response


def test_repeated_state_in_an_authorization_request_is_refused(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    response = oauth.browser.get("/oauth/authorize/?" + form(params) + "&state=again")
    assert response.status_code == 400
    assert "Location" not in response


def test_token_endpoint_errors_are_rfc6749_json(oauth, calendar):
    response = oauth.client.post(
        "/oauth/token/", form({"grant_type": "authorization_code", "code": "nope"}), FORM
    )
    assert response.status_code in (400, 401)
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] in {"invalid_request", "invalid_client", "invalid_grant"}
    assert "no-store" in response["Cache-Control"]


def test_unsupported_grant_types_are_refused(oauth, calendar):
    for grant_type in [
        "password",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
        "bogus",
    ]:
        response = oauth.client.post(
            "/oauth/token/", form({"grant_type": grant_type, "client_id": oauth.agent.client_id}), FORM
        )
        assert response.status_code == 400, grant_type
        assert response.json()["error"] == "unsupported_grant_type"


def test_introspection_with_tool_but_no_action_is_invalid_request(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    response = Client().post(
        "/oauth/introspect/",
        form({"token": tokens["access_token"], "tool": "list_events"}),
        FORM,
        HTTP_AUTHORIZATION=calendar.basic_auth(),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "tool,action",
    [("a" * 101, "read"), ("list_events", "r" * 51), ("=HYPERLINK(1)", "read"), ("list events", "read")],
    ids=["tool too long", "action too long", "formula", "space"],
)
def test_introspection_refuses_tool_and_action_that_are_not_names_and_records_nothing(
    oauth, calendar, tool, action
):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    before = AuditEvent.objects.count()

    response = Client(raise_request_exception=False).post(
        "/oauth/introspect/",
        form({"token": tokens["access_token"], "tool": tool, "action": action}),
        FORM,
        HTTP_AUTHORIZATION=calendar.basic_auth(),
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ],
)
def test_discovery_documents_answer_200_directly_with_no_redirect(db, path):
    response = Client().get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("method", ["get", "put", "delete"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-registration-token", "Basic Zm9vOmJhcg=="])
def test_client_configuration_endpoint_refuses_requests_without_the_registration_token(
    any_client, agent, method, authorization
):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = any_client.generic(
        method.upper(),
        f"/oauth/register/{agent.client_id}/",
        b"{}",
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 401
    assert response.json()["error"] in {"invalid_token", "invalid_client", "access_denied"}
    assert Agent.objects.filter(pk=agent.pk).exists()


# --- Text PostgreSQL cannot store: NUL, and lone surrogates from JSON escapes ----------------------

JSON = "application/json"
REGISTRATION = {"redirect_uris": ["http://127.0.0.1:1/cb"], "token_endpoint_auth_method": "none"}
UNSTORABLE_REQUESTS = {
    "admin search filter": ("get", "/admin/audit/auditevent/?human=%00", None, None),
    "API lookup": ("get", "/api/servers/%00/", None, None),
    "consent client_id": ("get", "/oauth/authorize/?client_id=%00&response_type=code", None, None),
    "introspection tool": ("post", "/oauth/introspect/", "token=abc&tool=%00&action=read", FORM),
    "token request": ("post", "/oauth/token/", "grant_type=authorization_code&code=%00", FORM),
    "registration NUL": ("post", "/oauth/register/", {**REGISTRATION, "client_name": "a\u0000b"}, JSON),
    "registration surrogate": ("post", "/oauth/register/", {**REGISTRATION, "client_name": "\ud800"}, JSON),
    "event API detail": (
        "post",
        "/api/audit/server-events/",
        {"events": [{"detail": {"a": "\u0000"}}]},
        JSON,
    ),
    "management API": ("post", "/api/groups/", {"name": "\udfff"}, JSON),
}


@pytest.mark.parametrize(
    "method,path,body,content_type", UNSTORABLE_REQUESTS.values(), ids=UNSTORABLE_REQUESTS.keys()
)
def test_text_postgresql_cannot_store_is_a_clear_400_and_changes_nothing(
    method, path, body, content_type, calendar
):
    staff = User.objects.create_superuser("root", password="root-password-123")
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=calendar.basic_auth())
    client.force_login(staff)
    before = state_snapshot()

    if method == "get":
        response = client.get(path)
    else:
        response = client.post(path, json.dumps(body) if content_type == JSON else body, content_type)

    assert response.status_code == 400, response.content[:300]
    assert b"NUL character or text that is not valid Unicode" in response.content
    assert state_snapshot() == before


def test_server_credentials_with_a_nul_are_refused_like_wrong_ones(calendar):
    credentials = base64.b64encode(b"srv_\x00x:secret").decode()
    response = Client(raise_request_exception=False).post(
        "/api/audit/server-events/",
        {"events": []},
        "application/json",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
