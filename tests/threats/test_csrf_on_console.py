"""CSRF on the console: a page elsewhere cannot make a signed-in security admin's (or human's)
browser change anything. Every state-changing console page, the management API (which takes the
console session) and "My agents" need the CSRF token; without it they answer 403 and change
nothing. Logging out is a POST, so an image tag cannot sign anyone out."""

from django.test import Client
from rest_framework.test import APIClient

from console.roles import Role
from policies.models import Agent, Delegation
from tests.api_support import make_agent, person
from tests.threats.support import snapshot


def browser_of(user) -> Client:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    return browser


def test_an_admin_page_post_without_a_csrf_token_changes_nothing(db):
    admin = person("admin", Role.SECURITY_ADMIN)
    agent = make_agent("Victim agent")
    before = snapshot()

    response = browser_of(admin).post(f"/admin/policies/agent/{agent.pk}/suspend/", {"confirm": "yes"})

    assert response.status_code == 403
    assert snapshot() == before
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ACTIVE


def test_an_api_write_with_the_session_but_no_csrf_token_changes_nothing(db):
    admin = person("admin", Role.SECURITY_ADMIN)
    agent = make_agent("Victim agent")
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(admin)
    before = snapshot()

    suspend = api.post(f"/api/agents/{agent.pk}/suspend/")
    create = api.post(
        "/api/servers/", {"name": "evil", "resource": "https://evil.example/mcp"}, format="json"
    )

    assert (suspend.status_code, create.status_code) == (403, 403)
    assert "CSRF" in suspend.json()["detail"]
    assert snapshot() == before


def test_my_agents_revoke_without_a_csrf_token_changes_nothing(oauth, alice, calendar):
    oauth.tokens(calendar.resource, "list_events:read")
    delegation = Delegation.objects.get()
    before = snapshot()

    response = browser_of(alice).post(f"/my-agents/{delegation.pk}/revoke/")

    assert response.status_code == 403
    assert snapshot() == before


def test_logout_is_not_a_get(alice):
    browser = browser_of(alice)
    assert browser.get("/accounts/logout/").status_code == 405
    assert browser.get("/my-agents/").status_code == 200  # still signed in
