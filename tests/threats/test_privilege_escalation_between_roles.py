"""Privilege escalation between console roles. tests/test_roles.py proves that every role reaches
exactly the pages and endpoints its row allows; this module attacks the edges with forms and API
payloads a role may submit, or may try to: an approver making themselves a security admin or
approving their own request, a compliance auditor changing anything, an end user reaching the
console or the API, a security admin granting superuser status or raw permissions. Each is refused
(or the forbidden field ignored) and nothing changes."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from rest_framework.test import APIClient

from console.roles import Role, has_role
from policies.models import Agent, Delegation, McpServer
from tests.api_support import make_agent, pending_delegation, person
from tests.conftest import make_server
from tests.threats.support import snapshot


def signed_in(user: User) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def api(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def user_form(user: User, **changes) -> dict:
    """The admin's change form for ``user`` as submitted, with ``changes``."""
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "groups": [str(pk) for pk in user.groups.values_list("pk", flat=True)],
    }
    if user.is_staff:
        data["is_staff"] = "on"
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def world(db):
    files = make_server("files", "https://files.example.com/mcp", {"read_file": ("low", ["read"])})
    return {"server": files.server, "agent": make_agent("World agent")}


# --- an approver -------------------------------------------------------------------------------


def test_an_approver_cannot_make_themselves_a_security_admin(world):
    approver = person("approver", Role.APPROVER)
    admins = Group.objects.get(name=Role.SECURITY_ADMIN)
    before = snapshot()

    form = signed_in(approver).post(
        f"/admin/auth/user/{approver.pk}/change/",
        user_form(approver, groups=[str(admins.pk)], is_superuser="on"),
    )
    membership = api(approver).patch(f"/api/groups/{admins.pk}/", {"members": ["approver"]}, format="json")

    assert form.status_code == 403
    assert membership.status_code == 403
    approver.refresh_from_db()
    assert not has_role(approver, Role.SECURITY_ADMIN) and not approver.is_superuser
    assert snapshot() == before


def test_an_approver_cannot_approve_their_own_request(world):
    approver = person("approver", Role.APPROVER)
    mine = pending_delegation(approver, world["agent"], world["server"], "read_file:read")

    by_api = api(approver).post(f"/api/delegations/{mine.pk}/approve/", {"comment": "fine"}, format="json")
    by_page = signed_in(approver).post(f"/admin/policies/delegation/{mine.pk}/decide/", {"comment": "fine"})

    assert by_api.status_code == 409
    assert "your own request" in by_api.json()["detail"]
    assert by_page.status_code == 200 and b"your own request" in by_page.content
    assert Delegation.objects.get(pk=mine.pk).status == Delegation.Status.PENDING


def test_an_approver_cannot_change_agents_or_servers(world):
    approver = person("approver", Role.APPROVER)
    agent = world["agent"]

    responses = [
        api(approver).post(f"/api/agents/{agent.pk}/suspend/"),
        api(approver).patch(f"/api/agents/{agent.pk}/", {"has_scope_ceiling": False}, format="json"),
        api(approver).post(
            "/api/servers/", {"name": "x", "resource": "https://x.example/mcp"}, format="json"
        ),
        signed_in(approver).post(f"/admin/policies/agent/{agent.pk}/suspend/", {"confirm": "yes"}),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ACTIVE
    assert McpServer.objects.count() == 1


# --- a compliance auditor ----------------------------------------------------------------------


def test_a_compliance_auditor_cannot_change_anything(world):
    auditor = person("auditor", Role.COMPLIANCE_AUDITOR)
    waiting = pending_delegation(person("bob"), world["agent"], world["server"], "read_file:read")
    admins = Group.objects.get(name=Role.SECURITY_ADMIN)
    before = snapshot()

    responses = {
        "suspend agent": api(auditor).post(f"/api/agents/{world['agent'].pk}/suspend/"),
        "approve": api(auditor).post(
            f"/api/delegations/{waiting.pk}/approve/", {"comment": ""}, format="json"
        ),
        "join admins": api(auditor).patch(
            f"/api/groups/{admins.pk}/", {"members": ["auditor"]}, format="json"
        ),
        "new server": api(auditor).post(
            "/api/servers/", {"name": "x", "resource": "https://x.example/mcp"}, format="json"
        ),
        "revoke all": api(auditor).post("/api/servers/files/revoke-all/"),
        "edit self": signed_in(auditor).post(
            f"/admin/auth/user/{auditor.pk}/change/", user_form(auditor, groups=[str(admins.pk)])
        ),
    }

    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(responses, 403)
    assert snapshot() == before
    assert not has_role(auditor, Role.SECURITY_ADMIN)


# --- an end user -------------------------------------------------------------------------------


def test_an_end_user_reaches_neither_the_console_nor_the_api(world):
    human = person("human")
    mine = pending_delegation(human, world["agent"], world["server"], "read_file:read")

    console = signed_in(human).get("/admin/")
    listing = api(human).get("/api/servers/")
    approve = api(human).post(f"/api/delegations/{mine.pk}/approve/", {"comment": ""}, format="json")
    schema = api(human).get("/api/schema/")

    assert console.status_code == 302 and "/login/" in console["Location"]
    assert (listing.status_code, approve.status_code, schema.status_code) == (403, 403, 403)
    assert Delegation.objects.get(pk=mine.pk).status == Delegation.Status.PENDING


def test_an_end_user_cannot_revoke_someone_elses_delegation(world):
    bob = person("bob")
    theirs = Delegation.objects.create(
        human=bob, agent=world["agent"], server=world["server"], scope="read_file:read", status="approved"
    )

    response = signed_in(person("human")).post(f"/my-agents/{theirs.pk}/revoke/")

    assert response.status_code == 404
    assert Delegation.objects.get(pk=theirs.pk).status == Delegation.Status.APPROVED


# --- a security admin --------------------------------------------------------------------------


def test_a_security_admin_cannot_grant_superuser_status_or_raw_permissions(world):
    admin = person("admin", Role.SECURITY_ADMIN)
    some_permission = Permission.objects.get(codename="delete_auditevent")

    response = signed_in(admin).post(
        f"/admin/auth/user/{admin.pk}/change/",
        user_form(admin, first_name="Changed", is_superuser="on", user_permissions=[str(some_permission.pk)]),
    )

    assert response.status_code == 302, response.content[:2000]  # saved: the form was valid
    admin.refresh_from_db()
    assert admin.first_name == "Changed"  # the allowed field changed ...
    assert not admin.is_superuser  # ... the forbidden ones did not
    assert not admin.user_permissions.exists()
    assert not admin.has_perm("audit.delete_auditevent")


def test_a_security_admin_cannot_give_a_group_raw_permissions(world):
    admin = person("admin", Role.SECURITY_ADMIN)
    staff = Group.objects.create(name="staff")
    some_permission = Permission.objects.get(codename="delete_auditevent")

    response = signed_in(admin).post(
        f"/admin/auth/group/{staff.pk}/change/", {"name": "staff", "permissions": [str(some_permission.pk)]}
    )

    assert response.status_code == 302
    assert not staff.permissions.exists()


def test_a_security_admin_cannot_take_over_a_superusers_account(world):
    admin = person("admin", Role.SECURITY_ADMIN)
    root = User.objects.create_superuser("root", password="root-password-123")

    response = signed_in(admin).post(
        f"/admin/auth/user/{root.pk}/change/",
        user_form(root, email="attacker@example.net", is_superuser="on"),
    )

    assert response.status_code == 403
    root.refresh_from_db()
    assert root.email == ""
