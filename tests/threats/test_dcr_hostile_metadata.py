"""DCR abuse, hostile metadata (RFC 7591 §5; RFC 9700 §4.1): a self-registering agent sends
redirect URIs that run script or read files, an http redirect off loopback, fields of the wrong
type or absurd size, names with invisible or direction-changing characters (the consent page would
show another name or host), or grant types the token endpoint does not serve. Each gets an RFC 7591
error and creates nothing: no agent, no registration token, no ``agent.registered`` event. Markup
in a name is allowed, and shown to the human as text."""

import pytest

from policies.models import AccessToken, Agent
from tests.conftest import OAuthDriver
from tests.test_registration import FOREIGN_HTTP_REDIRECT, SDK_REDIRECT, register, sdk_registration
from tests.threats.support import events

HOSTILE = [
    pytest.param({"redirect_uris": ["javascript:alert(1)"]}, id="javascript-redirect"),
    pytest.param({"redirect_uris": ["data:text/html,<b>x</b>"]}, id="data-redirect"),
    pytest.param({"redirect_uris": ["file:///etc/passwd"]}, id="file-redirect"),
    pytest.param({"redirect_uris": ["vbscript:msgbox(1)"]}, id="vbscript-redirect"),
    pytest.param({"redirect_uris": [FOREIGN_HTTP_REDIRECT]}, id="http-non-loopback"),
    pytest.param({"redirect_uris": ["https://good.example/cb#frag"]}, id="fragment"),
    pytest.param({"redirect_uris": ["/relative/callback"]}, id="relative"),
    pytest.param({"redirect_uris": "http://localhost:1/cb"}, id="redirect-uris-not-a-list"),
    pytest.param({"redirect_uris": [42]}, id="redirect-uri-not-a-string"),
    pytest.param(
        {"redirect_uris": [f"http://localhost:{1000 + i}/cb" for i in range(11)]}, id="too-many-uris"
    ),
    pytest.param({"redirect_uris": ["https://good.example/" + "a" * 5000]}, id="huge-redirect-uri"),
    pytest.param({"redirect_uris": ["http://localhost:1/cb\u202e"]}, id="bidi-in-redirect-uri"),
    pytest.param({"client_name": "x" * 256}, id="client-name-too-long"),
    pytest.param({"client_name": ["agent"]}, id="client-name-not-a-string"),
    pytest.param({"client_name": "Calendar\u202egnp.exe"}, id="client-name-rtl-override"),
    pytest.param({"client_name": "Admin\u200bConsole"}, id="client-name-zero-width"),
    pytest.param({"client_name": "line\nbreak"}, id="client-name-control"),
    pytest.param({"grant_types": "authorization_code"}, id="grant-types-not-a-list"),
    pytest.param({"grant_types": ["password"]}, id="password-grant"),
    pytest.param({"grant_types": ["client_credentials"]}, id="client-credentials-grant"),
    pytest.param({"grant_types": ["implicit"], "response_types": ["token"]}, id="implicit-grant"),
    pytest.param({"grant_types": ["urn:example:made-up"]}, id="unknown-grant"),
    pytest.param({"token_endpoint_auth_method": "private_key_jwt"}, id="unsupported-auth-method"),
]


@pytest.mark.parametrize("changes", HOSTILE)
def test_hostile_metadata_gets_an_rfc7591_error_and_creates_nothing(db, changes):
    response = register(sdk_registration(**changes))

    assert response.status_code == 400
    error = response.json()
    assert error["error"] in {"invalid_redirect_uri", "invalid_client_metadata"}
    assert error["error_description"]
    assert not Agent.objects.exists()
    assert not AccessToken.objects.exists()  # no registration access token either
    assert not events("agent.registered")


@pytest.mark.parametrize(
    "body",
    ["client_name=x&redirect_uris=y", "[]", "[" * 5_000 + "]" * 5_000, '"just a string"'],
    ids=["not-json", "json-array", "deeply-nested", "json-string"],
)
def test_a_body_that_is_not_a_metadata_object_creates_nothing(db, body):
    response = register(body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    assert not Agent.objects.exists()


def test_a_nul_character_is_refused_before_the_registration_view_runs(db):
    response = register(sdk_registration(client_name="agent\x00"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert not Agent.objects.exists()


def test_the_loopback_rule_is_named_when_refusing_a_plain_http_redirect(db):
    response = register(sdk_registration(redirect_uris=[FOREIGN_HTTP_REDIRECT]))
    assert "http is allowed for loopback hosts only" in response.json()["error_description"]


def test_a_name_in_another_script_is_welcome(db):
    response = register(sdk_registration(client_name="Агент календаря 日历"))
    assert response.status_code == 201
    assert Agent.objects.get().name == "Агент календаря 日历"


def test_markup_in_a_name_is_shown_as_text_on_the_consent_page(browser, calendar):
    markup = '<img src=x onerror="alert(1)">Calendar'
    agent = Agent.objects.get(client_id=register(sdk_registration(client_name=markup)).json()["client_id"])
    params = OAuthDriver(browser, agent).authorize_params(
        calendar.resource, "list_events:read", redirect_uri=SDK_REDIRECT
    )

    page = browser.get("/oauth/authorize/", params)

    assert page.status_code == 200
    assert markup.encode() not in page.content
    assert b"&lt;img src=x onerror=" in page.content
