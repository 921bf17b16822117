""" "My agents": a human sees the agents acting for them and revokes one; never anyone else's."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from policies.models import Agent, Delegation
from policies.services import delegate
from tests.conftest import REDIRECT_URI, allow_delegation, introspect

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_agent(db) -> Agent:
    return Agent.objects.create(
        name="Mail agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
    )


def test_the_page_lists_the_humans_agents_servers_and_scopes(
    browser, alice, agent, other_agent, calendar, mail
):
    delegate(alice, agent, calendar.server, ["list_events:read"])
    delegate(alice, other_agent, mail.server, ["send:write"])

    page = browser.get("/my-agents/")

    assert page.status_code == 200
    rows = {(row.agent.name, row.server.name, tuple(row.scopes)) for row in page.context["rows"]}
    assert rows == {
        ("Research agent", "calendar", ("list_events:read",)),
        ("Mail agent", "mail", ("send:write",)),
    }
    assert b"Research agent" in page.content and b"list_events:read" in page.content


def test_another_humans_delegations_are_not_listed(browser, alice, agent, calendar):
    bob = User.objects.create_user("bob", password="bob-password-123")
    allow_delegation("staff", [bob], calendar.server, ["list_events:read"])
    delegate(bob, agent, calendar.server, ["list_events:read"])

    page = browser.get("/my-agents/")

    assert list(page.context["rows"]) == []
    assert b"No agent acts for you." in page.content


def test_anonymous_visitors_are_sent_to_sign_in():
    response = Client().get("/my-agents/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/my-agents/")


def test_revoking_asks_first_then_ends_that_delegation_and_its_tokens_only(
    oauth, browser, alice, calendar, mail
):
    calendar_tokens = oauth.tokens(calendar.resource, "list_events:read")
    mail_tokens = oauth.tokens(mail.resource, "send:write")
    delegation = Delegation.objects.get(human=alice, server=calendar.server, status="approved")

    confirm = browser.get(f"/my-agents/{delegation.pk}/revoke/")
    assert confirm.status_code == 200
    assert Delegation.objects.get(pk=delegation.pk).status == "approved"  # a GET changes nothing

    response = browser.post(f"/my-agents/{delegation.pk}/revoke/")

    assert response.status_code == 302 and response["Location"] == "/my-agents/"
    assert Delegation.objects.get(pk=delegation.pk).status == "revoked"
    assert introspect(calendar, calendar_tokens["access_token"]).json() == {"active": False}
    assert introspect(mail, mail_tokens["access_token"]).json()["active"] is True


def test_another_humans_delegation_is_a_404_and_stays_approved(browser, agent, calendar):
    bob = User.objects.create_user("bob", password="bob-password-123")
    allow_delegation("staff", [bob], calendar.server, ["list_events:read"])
    bobs = delegate(bob, agent, calendar.server, ["list_events:read"])

    assert browser.get(f"/my-agents/{bobs.pk}/revoke/").status_code == 404
    assert browser.post(f"/my-agents/{bobs.pk}/revoke/").status_code == 404
    assert Delegation.objects.get(pk=bobs.pk).status == "approved"


def test_revoking_needs_the_csrf_token(alice, agent, calendar):
    delegation = delegate(alice, agent, calendar.server, ["list_events:read"])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    response = browser.post(f"/my-agents/{delegation.pk}/revoke/")

    assert response.status_code == 403
    assert Delegation.objects.get(pk=delegation.pk).status == "approved"
