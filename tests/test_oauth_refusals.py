"""Refusals that follow the lifecycle: a suspended agent, a revoked delegation, RFC 7009
revocation, a policy that no longer allows. The refusals of attacks (PKCE downgrade, code replay,
redirect URI manipulation, audiences, introspection by non-servers, ...) are in tests/threats/."""

from policies.models import Agent, Delegation
from policies.services import revoke_delegation
from tests.conftest import FORM, form, introspect


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
