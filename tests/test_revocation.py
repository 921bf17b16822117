"""Revocation at every level: each revokes exactly what is below it, and the very next
introspection says so, while every other human, agent and server keeps working."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEvent
from policies.models import AccessToken, Agent, Delegation, RefreshToken
from policies.services import (
    AgentStatusError,
    revoke_agent_tokens,
    revoke_delegation,
    revoke_human_delegations,
    revoke_server_delegations,
    revoke_token,
    set_agent_status,
)
from tests.conftest import FORM, REDIRECT_URI, OAuthDriver, allow_delegation, form, introspect


def active(server, token: str) -> bool:
    return introspect(server, token).json()["active"]


@pytest.fixture
def other_agent(db) -> Agent:
    return Agent.objects.create(
        name="Other agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
    )


@pytest.fixture
def bob(calendar) -> User:
    user = User.objects.create_user("bob")
    allow_delegation("bob-staff", [user], calendar.server, ["list_events:read"])
    return user


@pytest.fixture
def estate(browser, agent, other_agent, bob, calendar, mail, admin_user):
    """Four integrations: (human, agent, server) -> tokens, and the admin who revokes."""

    def tokens(human_browser, who, server, scope):
        return OAuthDriver(human_browser, who).tokens(server.resource, scope)

    bob_browser = Client()
    bob_browser.force_login(bob)
    return {
        "alice/agent/calendar": (calendar, tokens(browser, agent, calendar, "list_events:read")),
        "alice/agent/mail": (mail, tokens(browser, agent, mail, "send:write")),
        "alice/other/calendar": (calendar, tokens(browser, other_agent, calendar, "list_events:read")),
        "bob/agent/calendar": (calendar, tokens(bob_browser, agent, calendar, "list_events:read")),
    }


def still_active(estate) -> set[str]:
    return {name for name, (server, tokens) in estate.items() if active(server, tokens["access_token"])}


ALL = {"alice/agent/calendar", "alice/agent/mail", "alice/other/calendar", "bob/agent/calendar"}


@pytest.mark.parametrize(
    "level, revoke, revoked",
    [
        (
            "delegation",
            lambda agent, alice, calendar: revoke_delegation(
                Delegation.objects.get(human=alice, agent=agent, server=calendar.server), by=None
            ),
            {"alice/agent/calendar"},
        ),
        (
            "agent",
            lambda agent, alice, calendar: revoke_agent_tokens(agent, by=None),
            {"alice/agent/calendar", "alice/agent/mail", "bob/agent/calendar"},
        ),
        (
            "human",
            lambda agent, alice, calendar: revoke_human_delegations(alice, by=None),
            {"alice/agent/calendar", "alice/agent/mail", "alice/other/calendar"},
        ),
        (
            "server",
            lambda agent, alice, calendar: revoke_server_delegations(calendar.server, by=None),
            {"alice/agent/calendar", "alice/other/calendar", "bob/agent/calendar"},
        ),
    ],
)
def test_each_revocation_level_revokes_exactly_what_is_below_it(
    estate, agent, alice, calendar, level, revoke, revoked
):
    assert still_active(estate) == ALL
    count = revoke(agent, alice, calendar)

    assert count == len(revoked)
    assert still_active(estate) == ALL - revoked
    # Their refresh tokens are dead too, the others' still refresh.
    for name, (_server, tokens) in estate.items():
        driver = OAuthDriver(Client(), agent if "/agent/" in name else Agent.objects.get(name="Other agent"))
        refreshed = driver.refresh(tokens["refresh_token"]).status_code
        assert refreshed == (400 if name in revoked else 200), name
    assert AuditEvent.objects.filter(event_type="delegation.revoked", reason=level).count() == len(revoked)


def test_revoking_one_token_leaves_its_delegation_and_every_other_token_working(estate, admin_user):
    server, tokens = estate["alice/agent/calendar"]
    token = AccessToken.objects.get(token_checksum=_checksum(tokens["access_token"]))
    delegation = token.delegation

    revoke_token(token, by=admin_user)

    assert still_active(estate) == ALL - {"alice/agent/calendar"}
    assert not RefreshToken.objects.filter(delegation=delegation, revoked__isnull=True).exists()
    delegation.refresh_from_db()
    assert delegation.status == Delegation.Status.APPROVED
    event = AuditEvent.objects.get(event_type="token.revoked")
    assert (event.actor_username, event.delegation_id) == ("admin", delegation.pk)


def test_revoking_a_refresh_token_revokes_its_access_token_too(estate):
    server, tokens = estate["bob/agent/calendar"]
    refresh = RefreshToken.objects.get(token_checksum=_checksum(tokens["refresh_token"]))

    revoke_token(refresh, by=None)

    assert still_active(estate) == ALL - {"bob/agent/calendar"}


def test_revoking_a_refresh_token_again_changes_and_records_nothing(estate):
    server, tokens = estate["bob/agent/calendar"]
    refresh = RefreshToken.objects.get(token_checksum=_checksum(tokens["refresh_token"]))
    revoke_token(refresh, by=None)
    refresh.refresh_from_db()
    revoked_at = refresh.revoked

    revoke_token(refresh, by=None)

    refresh.refresh_from_db()
    assert refresh.revoked == revoked_at
    assert AuditEvent.objects.filter(event_type="token.revoked").count() == 1


def test_an_agent_revoking_its_own_token_by_rfc7009_is_audited(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    response = oauth.client.post(
        "/oauth/revoke/",
        form({"token": tokens["access_token"], "client_id": oauth.agent.client_id}),
        FORM,
    )

    assert response.status_code == 200
    assert not active(calendar, tokens["access_token"])
    event = AuditEvent.objects.get(event_type="token.revoked")
    assert (event.reason, event.agent_client_id, event.human_username) == (
        "rfc7009",
        oauth.agent.client_id,
        "alice",
    )


def test_a_replayed_refresh_token_is_audited_as_reuse(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    assert oauth.refresh(tokens["refresh_token"]).status_code == 200

    assert oauth.refresh(tokens["refresh_token"]).status_code == 400

    event = AuditEvent.objects.get(event_type="token.refresh_reused")
    assert (event.outcome, event.human_username) == ("deny", "alice")


def test_suspending_an_agent_makes_its_tokens_inactive_and_reactivating_restores_them(
    estate, agent, admin_user
):
    set_agent_status(agent, Agent.Status.SUSPENDED, by=admin_user)
    assert still_active(estate) == {"alice/other/calendar"}

    set_agent_status(agent, Agent.Status.ACTIVE, by=admin_user)
    assert still_active(estate) == ALL
    events = AuditEvent.objects.filter(event_type__in=["agent.suspended", "agent.reactivated"])
    assert [(e.event_type, e.actor_username) for e in events.order_by("pk")] == [
        ("agent.suspended", "admin"),
        ("agent.reactivated", "admin"),
    ]


def test_approving_a_pending_agent_lets_it_authorize(oauth, calendar, admin_user):
    Agent.objects.filter(pk=oauth.agent.pk).update(status=Agent.Status.PENDING)
    page = oauth.browser.get(
        "/oauth/authorize/", oauth.authorize_params(calendar.resource, "list_events:read")
    )
    assert page.status_code == 400

    set_agent_status(oauth.agent, Agent.Status.ACTIVE, by=admin_user)

    assert oauth.tokens(calendar.resource, "list_events:read")["scope"] == "list_events:read"
    assert AuditEvent.objects.filter(event_type="agent.approved", actor_username="admin").exists()


def test_a_status_change_an_agent_cannot_make_is_refused_and_changes_nothing(agent, admin_user):
    set_agent_status(agent, Agent.Status.SUSPENDED, by=admin_user)
    with pytest.raises(AgentStatusError):
        set_agent_status(agent, Agent.Status.PENDING, by=admin_user)
    agent.refresh_from_db()
    assert agent.status == Agent.Status.SUSPENDED


def _checksum(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
