"""Management API: delegations (review, approve, deny, revoke), token metadata, and revocation per human."""

import pytest

from audit.models import AuditEvent
from console.roles import Role
from policies.models import AccessToken, Delegation, RefreshToken
from tests.api_support import api_as, make_agent, pending_delegation, person, tokens_for
from tests.conftest import OAuthDriver, allow_delegation, introspect


@pytest.fixture
def approver(db):
    return person("approver", Role.APPROVER)


@pytest.fixture
def admin_api(db):
    return api_as(person("sec", Role.SECURITY_ADMIN))


def test_an_approver_lists_pending_delegations_and_approves_one_with_a_comment(
    approver, alice, agent, calendar
):
    waiting = pending_delegation(alice, agent, calendar.server, "create_event:write")
    api = api_as(approver)

    listed = api.get("/api/delegations/", {"status": "pending", "human": "alice"}).json()["results"]
    response = api.post(f"/api/delegations/{waiting.pk}/approve/", {"comment": "ok for Q3"}, format="json")

    assert [d["id"] for d in listed] == [waiting.pk]
    assert response.status_code == 200, response.content
    waiting.refresh_from_db()
    assert waiting.status == "approved" and waiting.approved_by == approver
    assert waiting.decision_comment == "ok for Q3"
    assert AuditEvent.objects.filter(
        event_type="delegation.approved", delegation_id=waiting.pk, actor_username="approver"
    ).exists()


def test_denying_needs_a_comment_and_records_the_approver(approver, alice, agent, calendar):
    waiting = pending_delegation(alice, agent, calendar.server, "create_event:write")
    api = api_as(approver)

    without = api.post(f"/api/delegations/{waiting.pk}/deny/", {}, format="json")
    denied = api.post(f"/api/delegations/{waiting.pk}/deny/", {"comment": "not for bots"}, format="json")

    assert without.status_code == 400 and "comment" in without.json()
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert denied.json()["decision_comment"] == "not for bots"
    assert AuditEvent.objects.filter(event_type="delegation.denied", actor_username="approver").count() == 1


def test_deciding_a_delegation_twice_is_a_conflict_that_changes_nothing(approver, alice, agent, calendar):
    waiting = pending_delegation(alice, agent, calendar.server, "create_event:write")
    api = api_as(approver)
    api.post(f"/api/delegations/{waiting.pk}/deny/", {"comment": "no"}, format="json")
    events = AuditEvent.objects.count()

    again = api.post(f"/api/delegations/{waiting.pk}/approve/", {}, format="json")

    assert again.status_code == 409
    waiting.refresh_from_db()
    assert waiting.status == "denied"
    assert AuditEvent.objects.count() == events


def test_an_approver_cannot_revoke(approver, alice, agent, calendar):
    delegation = Delegation.objects.create(
        human=alice, agent=agent, server=calendar.server, scope="list_events:read", status="approved"
    )

    assert api_as(approver).post(f"/api/delegations/{delegation.pk}/revoke/").status_code == 403
    delegation.refresh_from_db()
    assert delegation.status == "approved"


def test_token_listing_shows_metadata_and_never_the_token(admin_api, alice, agent, calendar):
    delegation = Delegation.objects.create(
        human=alice, agent=agent, server=calendar.server, scope="list_events:read", status="approved"
    )
    tokens = tokens_for(delegation, "secret-value")

    access = admin_api.get("/api/access-tokens/", {"human": "alice"}).json()["results"]
    refresh = admin_api.get(f"/api/refresh-tokens/{tokens.refresh.pk}/").json()

    assert access == [
        {
            "id": tokens.access.pk,
            "human": "alice",
            "agent": agent.client_id,
            "server": "calendar",
            "delegation": delegation.pk,
            "scope": "list_events:read",
            "expires": access[0]["expires"],
            "created": access[0]["created"],
        }
    ]
    for shown in (str(access), str(refresh)):
        assert "secret-value" not in shown
        assert tokens.access.token_checksum not in shown and "checksum" not in shown


def test_revoking_one_token_leaves_the_delegation_and_other_tokens(admin_api, oauth, calendar):
    first = oauth.tokens(calendar.resource)["access_token"]
    second = oauth.tokens(calendar.resource)["access_token"]
    target = AccessToken.objects.order_by("id").first()

    response = admin_api.post(f"/api/access-tokens/{target.pk}/revoke/")

    assert response.status_code == 204
    assert introspect(calendar, first).json()["active"] is False
    assert introspect(calendar, second).json()["active"] is True
    assert Delegation.objects.get(agent=oauth.agent).status == "approved"
    assert RefreshToken.objects.filter(revoked__isnull=False).count() == 1


def test_revoking_a_humans_delegations_leaves_other_humans_working(admin_api, oauth, calendar, browser):
    bob = person("bob")
    allow_delegation("staff", [bob], calendar.server, ["list_events:read"])
    bob_browser = type(browser)()
    bob_browser.force_login(bob)
    bob_token = OAuthDriver(bob_browser, make_agent("Bob's agent")).tokens(calendar.resource)["access_token"]
    alice_token = oauth.tokens(calendar.resource)["access_token"]

    response = admin_api.post("/api/humans/alice/revoke-all/")

    assert response.json() == {"revoked": 1}
    assert introspect(calendar, alice_token).json()["active"] is False
    assert introspect(calendar, bob_token).json()["active"] is True
    assert admin_api.get("/api/humans/alice/").json()["live_delegations"] == 0
