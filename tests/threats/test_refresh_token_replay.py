"""Refresh token replay (RFC 9700 §4.14): refresh tokens rotate, and presenting a used one again
means it was stolen. The replay is refused, the whole family dies (the legitimate holder's newest
tokens too), and the audit trail records the reuse with the human and the agent."""

from tests.api_support import make_agent
from tests.conftest import introspect
from tests.threats.support import events


def test_a_replayed_refresh_token_is_refused_and_revokes_its_family(oauth, calendar):
    first = oauth.tokens(calendar.resource, "list_events:read")
    rotated = oauth.refresh(first["refresh_token"], calendar.resource)
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]

    replay = oauth.refresh(first["refresh_token"], calendar.resource)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.json()
    # Reuse means theft: the whole family dies, including the legitimately rotated tokens.
    assert introspect(calendar, second["access_token"]).json() == {"active": False}
    assert oauth.refresh(second["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"
    event = events("token.refresh_reused")[0]
    assert (event.outcome, event.reason, event.human_username, event.agent_client_id) == (
        "deny",
        "refresh_token_reused",
        "alice",
        oauth.agent.client_id,
    )


def test_a_replay_leaves_the_humans_other_families_alone(oauth, calendar, mail):
    calendar_tokens = oauth.tokens(calendar.resource, "list_events:read")
    mail_tokens = oauth.tokens(mail.resource, "send:write")
    oauth.refresh(calendar_tokens["refresh_token"], calendar.resource)

    oauth.refresh(calendar_tokens["refresh_token"], calendar.resource)

    assert introspect(mail, mail_tokens["access_token"]).json()["active"] is True
    assert oauth.refresh(mail_tokens["refresh_token"], mail.resource).status_code == 200


def test_another_agent_cannot_use_a_stolen_refresh_token(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    thief = make_agent("Thief agent")
    response = oauth.client.post(
        "/oauth/token/",
        f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}&client_id={thief.client_id}",
        "application/x-www-form-urlencoded",
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert introspect(calendar, tokens["access_token"]).json()["active"] is True
