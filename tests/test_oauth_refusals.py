"""Each refusal the OAuth 2.1 profile promises: what is refused, with which error, and that nothing
was issued on the way."""

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from policies.models import AccessToken, Agent, Delegation, Grant
from policies.services import revoke_delegation
from tests.conftest import FORM, REDIRECT_URI, form, introspect


def redirect_error(response) -> dict:
    assert response.status_code == 302, response.content[:300]
    assert response["Location"].startswith(REDIRECT_URI)
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


def test_plain_pkce_is_refused(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    params.update(code_challenge=oauth.verifier, code_challenge_method="plain")
    page = oauth.browser.get("/oauth/authorize/", params)
    assert redirect_error(page)["error"] == "invalid_request"
    assert not Grant.objects.exists()


def test_missing_pkce_is_refused(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    del params["code_challenge"], params["code_challenge_method"]
    error = redirect_error(oauth.browser.get("/oauth/authorize/", params))
    assert error["error"] == "invalid_request"
    assert "code challenge" in error["error_description"].lower()


def test_wrong_code_verifier_is_refused(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    response = oauth.exchange(code, calendar.resource, verifier="x" * 50)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()


def test_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    params["redirect_uri"] = "https://attacker.example.net/callback"
    page = oauth.browser.get("/oauth/authorize/", params)
    assert page.status_code == 400
    assert "Location" not in page
    assert b"attacker.example.net" not in page.content


def test_loopback_redirect_may_use_any_port(oauth, calendar):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    params["redirect_uri"] = "http://127.0.0.1:40111/callback"
    assert oauth.browser.get("/oauth/authorize/", params).status_code == 200


def test_a_replayed_authorization_code_is_refused_and_revokes_the_tokens_it_minted(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    first = oauth.exchange(code, calendar.resource)
    assert first.status_code == 200
    tokens = first.json()

    replay = oauth.exchange(code, calendar.resource)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # A replayed code means it leaked: what it minted is no longer trusted.
    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}
    assert oauth.refresh(tokens["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"
    event = AuditEvent.objects.get(event_type="authorization_code.replayed")
    assert (event.outcome, event.human_username, event.server_name) == ("deny", "alice", "calendar")


@pytest.mark.django_db(transaction=True)
def test_concurrent_exchanges_of_one_code_mint_one_token(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    barrier = threading.Barrier(4)
    statuses = []

    def exchange() -> None:
        barrier.wait()
        statuses.append(oauth.exchange(code, calendar.resource).status_code)
        connection.close()

    threads = [threading.Thread(target=exchange) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 400, 400, 400]
    assert AccessToken.objects.filter(delegation__isnull=False).count() == 1


def test_refresh_rotates_and_a_replayed_refresh_token_revokes_its_family(oauth, calendar):
    first = oauth.tokens(calendar.resource, "list_events:read")
    rotated = oauth.refresh(first["refresh_token"], calendar.resource)
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]

    replay = oauth.refresh(first["refresh_token"], calendar.resource)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # Reuse means theft: the whole family dies, including the legitimately rotated tokens.
    assert introspect(calendar, second["access_token"]).json() == {"active": False}
    assert oauth.refresh(second["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("resource", [None, "https://unknown.example.com/mcp"])
def test_authorization_without_a_known_resource_is_refused_with_invalid_target(oauth, calendar, resource):
    params = oauth.authorize_params(resource, "list_events:read")
    error = redirect_error(oauth.browser.get("/oauth/authorize/", params))
    assert error["error"] == "invalid_target"
    assert error["state"] == params["state"]
    assert not Delegation.objects.exists()


def test_two_resources_are_refused_a_token_is_bound_to_one_server(oauth, calendar, mail):
    params = oauth.authorize_params(calendar.resource, "list_events:read")
    query = form(params) + "&" + form({"resource": mail.resource})
    error = redirect_error(oauth.browser.get("/oauth/authorize/?" + query))
    assert error["error"] == "invalid_target"


def test_inactive_server_is_an_unknown_target(oauth, calendar):
    calendar.server.active = False
    calendar.server.save()
    error = redirect_error(oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource)))
    assert error["error"] == "invalid_target"


def test_token_request_for_another_server_than_consented_is_refused(oauth, calendar, mail):
    code = oauth.get_code(calendar.resource, "list_events:read")
    response = oauth.exchange(code, mail.resource)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert not AccessToken.objects.filter(delegation__isnull=False).exists()


def test_refresh_cannot_move_a_token_to_another_server(oauth, calendar, mail):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    response = oauth.refresh(tokens["refresh_token"], mail.resource)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_a_token_is_inactive_for_every_server_but_its_own(oauth, calendar, mail):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    assert introspect(mail, tokens["access_token"]).json() == {"active": False}
    assert introspect(calendar, tokens["access_token"]).json()["active"] is True


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic bm9wZTpub3Bl", "Bearer whatever", "Basic !!!notbase64", "Basic " + "YWJj"],
    ids=["none", "wrong-secret", "bearer", "garbage", "no-colon"],
)
def test_introspection_without_server_credentials_is_401(oauth, calendar, authorization):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().post("/oauth/introspect/", form({"token": tokens["access_token"]}), FORM, **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.json()


def test_an_agents_own_credentials_cannot_introspect(calendar, oauth, db):
    confidential = Agent(
        name="confidential",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret="agent-secret-value",
        hash_client_secret=True,
    )
    confidential.save()
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    response = Client().post(
        "/oauth/introspect/",
        form(
            {
                "token": tokens["access_token"],
                "client_id": confidential.client_id,
                "client_secret": "agent-secret-value",
            }
        ),
        FORM,
    )
    assert response.status_code == 401


def test_a_server_may_authenticate_with_client_secret_post(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    body = {
        "token": tokens["access_token"],
        "client_id": calendar.client_id,
        "client_secret": calendar.client_secret,
    }
    assert Client().post("/oauth/introspect/", form(body), FORM).json()["active"] is True


def test_a_suspended_agent_can_neither_authorize_nor_refresh_nor_use_its_tokens(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    Agent.objects.filter(pk=oauth.agent.pk).update(status=Agent.Status.SUSPENDED)

    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}
    refresh = oauth.refresh(tokens["refresh_token"], calendar.resource)
    assert refresh.status_code == 401
    assert refresh.json()["error"] == "invalid_client"
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource))
    assert page.status_code == 400
    assert "Location" not in page
    assert b"suspended by an administrator" in page.content


def test_revoking_the_delegation_deactivates_its_tokens_at_the_next_introspection(
    oauth, alice, calendar, mail
):
    calendar_tokens = oauth.tokens(calendar.resource, "list_events:read")
    mail_tokens = oauth.tokens(mail.resource, "send:write")

    revoke_delegation(Delegation.objects.get(server=calendar.server), by=alice)

    assert introspect(calendar, calendar_tokens["access_token"]).json() == {"active": False}
    assert (
        oauth.refresh(calendar_tokens["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"
    )
    # The other integration of the same agent and human keeps working.
    assert introspect(mail, mail_tokens["access_token"]).json()["active"] is True


def test_rfc7009_revocation_of_the_refresh_token_kills_its_access_token(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    response = oauth.client.post(
        "/oauth/revoke/",
        form(
            {
                "token": tokens["refresh_token"],
                "token_type_hint": "refresh_token",
                "client_id": oauth.agent.client_id,
            }
        ),
        FORM,
    )
    assert response.status_code == 200
    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}
    assert oauth.refresh(tokens["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"


def test_no_new_token_once_the_policy_no_longer_lets_the_human_delegate(oauth, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    alice.groups.clear()
    response = oauth.refresh(tokens["refresh_token"], calendar.resource)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "no_usable_scope" in response.json()["error_description"]
