"""The console's admin screens: servers and their credentials, tool import, agents, delegations,
tokens and people. Driven over HTTP with Django's test client; state changes go through services."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core import mail as outbox
from django.forms import MultiWidget
from django.test import Client
from mcp.server.mcpserver import MCPServer

from audit.events import record
from audit.models import AuditEvent
from console.roles import Role, assign_role, has_role
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    McpServer,
    PolicySetting,
    Tool,
    ToolAction,
)
from policies.services import delegate
from policies.tasks import notify_approvers
from tests.conftest import OAuthDriver, allow_delegation, introspect
from tests.live_mcp import serving

pytestmark = pytest.mark.django_db


def staff_client(username: str, role: Role | None = None, superuser: bool = False) -> tuple[Client, User]:
    if superuser:
        user = User.objects.create_superuser(username, password="admin-password-123")
    else:
        user = User.objects.create_user(username, password="staff-password-123")
        assign_role(user, role)
    client = Client()
    client.force_login(user)
    return client, user


@pytest.fixture
def admin_client_() -> Client:
    return staff_client("secadmin", Role.SECURITY_ADMIN)[0]


def server_form(**fields) -> dict:
    data = {
        "name": "notes",
        "resource": "https://notes.example.com/mcp",
        "description": "",
        "default_scopes": "",
        "active": "on",
        "tools-TOTAL_FORMS": "0",
        "tools-INITIAL_FORMS": "0",
        "tools-MIN_NUM_FORMS": "0",
        "tools-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


# --- Dashboard ----------------------------------------------------------------------------------


def test_dashboard_shows_pending_approvals_active_agents_the_chart_and_recent_denials(
    admin_client_, alice, agent, calendar
):
    Agent.objects.create(
        name="Waiting agent",
        client_type="public",
        authorization_grant_type="authorization-code",
        status=Agent.Status.PENDING,
    )
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")
    delegate(alice, agent, calendar.server, ["create_event:write"])
    record(
        "tool_call.decision",
        outcome="deny",
        reason="scope_missing",
        human=alice,
        agent=agent,
        server=calendar.server,
        tool="create_event",
        action="write",
    )

    page = admin_client_.get("/admin/")

    assert page.status_code == 200
    assert page.context["pending_delegations_count"] == 1
    assert page.context["pending_agents_count"] == 1
    assert page.context["active_agents_count"] == 1
    assert '"Calls denied"' in page.context["activity_chart"]
    html = page.content.decode()
    assert "MCP Policy Console" in html
    assert 'class="chart"' in html
    assert "scope_missing" in html and "Recent denials" in html


def test_an_approver_sees_pending_delegations_but_no_audit_or_agents_on_the_dashboard(alice, agent, calendar):
    client, _ = staff_client("approver", Role.APPROVER)

    page = client.get("/admin/")

    assert page.status_code == 200
    assert "pending_delegations_count" in page.context
    assert "recent_denials" not in page.context and "active_agents_count" not in page.context


# --- MCP servers ----------------------------------------------------------------------------------


def test_registering_a_server_shows_its_secret_once_and_stores_only_the_hash(admin_client_):
    response = admin_client_.post("/admin/policies/mcpserver/add/", server_form())

    assert response.status_code == 200
    server = McpServer.objects.get(name="notes")
    secret = response.context["secret"]
    assert server.check_secret(secret)
    assert server.client_id in response.content.decode() and secret in response.content.decode()
    assert secret not in admin_client_.get(f"/admin/policies/mcpserver/{server.pk}/change/").content.decode()
    assert AuditEvent.objects.filter(event_type="server.registered", server_name="notes").exists()


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("https://calendar.example.com/mcp", "already exists"),
        ("not a uri", "Enter a valid URL"),
        ("https://notes.example.com/mcp#frag", "must not contain a fragment"),
        ("http://notes.example.com/mcp", "plain http is allowed for loopback hosts only"),
    ],
)
def test_a_bad_resource_uri_is_refused_with_a_message_and_nothing_is_created(
    admin_client_, calendar, resource, message
):
    before = McpServer.objects.count()

    response = admin_client_.post("/admin/policies/mcpserver/add/", server_form(resource=resource))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert McpServer.objects.count() == before


def test_unknown_default_scopes_are_refused_and_change_nothing(admin_client_, calendar):
    server = calendar.server
    response = admin_client_.post(
        f"/admin/policies/mcpserver/{server.pk}/change/",
        server_form(
            name="calendar",
            resource=server.resource,
            default_scopes="list_events:read nope:write",
            **{"tools-TOTAL_FORMS": "0", "tools-INITIAL_FORMS": "0"},
        ),
    )

    assert response.status_code == 200
    assert "Unknown scope(s) for this server: nope:write" in response.content.decode()
    server.refresh_from_db()
    assert server.default_scopes == ""


def test_rotating_credentials_asks_first_then_the_old_secret_stops_working(admin_client_, calendar):
    url = f"/admin/policies/mcpserver/{calendar.server.pk}/rotate-credentials/"

    assert admin_client_.get(url).status_code == 200
    calendar.server.refresh_from_db()
    assert calendar.server.check_secret(calendar.client_secret)  # the question changed nothing

    response = admin_client_.post(url, {"confirm": "yes"})

    calendar.server.refresh_from_db()
    assert not calendar.server.check_secret(calendar.client_secret)
    assert calendar.server.check_secret(response.context["secret"])


def test_the_import_page_imports_and_shows_the_diff(admin_client_):
    mcp = MCPServer("notes")
    mcp.add_tool(lambda: "", name="list_notes", description="List notes.")
    with serving(mcp) as resource:
        server = McpServer.objects.create(
            name="notes", resource=resource, client_id="srv_notes", secret_hash="x"
        )
        url = f"/admin/policies/mcpserver/{server.pk}/import-tools/"
        assert admin_client_.get(url).status_code == 200

        response = admin_client_.post(url, {"token": ""})

    assert response.status_code == 200
    assert response.context["result"].added == ["list_notes"]
    assert re.search(r'data-testid="added">\s*list_notes', response.content.decode())
    assert Tool.objects.filter(server=server, name="list_notes").exists()


def test_the_import_page_shows_why_an_import_failed_and_changes_nothing(admin_client_, calendar):
    with serving(MCPServer("gone")) as resource:
        pass
    McpServer.objects.filter(pk=calendar.server.pk).update(resource=resource)

    response = admin_client_.post(
        f"/admin/policies/mcpserver/{calendar.server.pk}/import-tools/", {"token": "t0k"}
    )

    assert response.status_code == 200
    assert "Nothing was changed. Could not reach the server" in response.content.decode()
    assert "t0k" not in response.content.decode()
    assert Tool.objects.filter(server=calendar.server, available=True).count() == 2


def test_revoking_everything_bound_to_a_server_leaves_other_servers_working(
    admin_client_, oauth, calendar, mail
):
    calendar_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]
    url = f"/admin/policies/mcpserver/{calendar.server.pk}/revoke-everything/"

    assert "1 live or pending" in admin_client_.get(url).content.decode()
    admin_client_.post(url, {"confirm": "yes"})

    assert introspect(calendar, calendar_token).json() == {"active": False}
    assert introspect(mail, mail_token).json()["active"] is True


# --- Agents ---------------------------------------------------------------------------------------


def test_an_admin_registers_an_agent_by_hand_with_owner_team_ceiling_and_lifetimes(
    admin_client_, calendar, alice
):
    read = calendar.server.tools.get(name="list_events").actions.get()
    response = admin_client_.post(
        "/admin/policies/agent/add/",
        {
            "name": "Build bot",
            "client_id": "build-bot",
            "client_type": "public",
            "authorization_grant_type": "authorization-code",
            "redirect_uris": "https://ci.example.com/callback",
            "client_secret": "",
            "user": alice.pk,
            "team": "platform",
            "has_scope_ceiling": "on",
            "scope_ceiling": [read.pk],
            "access_token_lifetime": "300",
            "refresh_token_lifetime": "",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    agent = Agent.objects.get(client_id="build-bot")
    assert (agent.user, agent.team, agent.access_token_lifetime) == (alice, "platform", 300)
    assert list(agent.scope_ceiling.all()) == [read]
    assert agent.status == Agent.Status.ACTIVE


def test_suspending_an_agent_makes_its_tokens_inactive_and_reactivating_restores_them(
    admin_client_, oauth, calendar, agent
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]

    admin_client_.post("/admin/policies/agent/", {"action": "suspend", "_selected_action": [agent.pk]})
    assert introspect(calendar, token).json() == {"active": False}

    admin_client_.post(f"/admin/policies/agent/{agent.pk}/reactivate/", {"confirm": "yes"})
    assert introspect(calendar, token).json()["active"] is True
    assert list(
        AuditEvent.objects.filter(agent_client_id=agent.client_id, event_type__startswith="agent.")
        .values_list("event_type", flat=True)
        .order_by("id")
    ) == ["agent.registered", "agent.suspended", "agent.reactivated"]


def test_a_transition_an_agent_cannot_make_is_a_message_not_an_error(admin_client_, agent):
    response = admin_client_.post(
        "/admin/policies/agent/", {"action": "approve", "_selected_action": [agent.pk]}, follow=True
    )
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.status == Agent.Status.ACTIVE  # approve of an active agent is a no-op


def make_agent_in(status: str) -> Agent:
    return Agent.objects.create(
        name=f"A {status} agent",
        client_type="public",
        authorization_grant_type="authorization-code",
        status=status,
    )


@pytest.mark.parametrize(
    "action, status",
    [("approve", Agent.Status.SUSPENDED), ("reactivate", Agent.Status.PENDING)],
)
def test_approve_never_reactivates_and_reactivate_never_approves(admin_client_, action, status):
    on_page, in_bulk = make_agent_in(status), make_agent_in(status)

    page = admin_client_.post(
        f"/admin/policies/agent/{on_page.pk}/{action}/", {"confirm": "yes"}, follow=True
    )
    bulk = admin_client_.post(
        "/admin/policies/agent/", {"action": action, "_selected_action": [in_bulk.pk]}, follow=True
    )

    for response in (page, bulk):
        assert response.status_code == 200
        assert f"this action applies to {'pending' if action == 'approve' else 'suspended'} agents only" in (
            response.content.decode()
        )
    for agent in (on_page, in_bulk):
        agent.refresh_from_db()
        assert agent.status == status
    assert not AuditEvent.objects.filter(event_type__in=["agent.approved", "agent.reactivated"]).exists()


def test_revoking_an_agents_tokens_asks_then_leaves_other_agents_working(
    admin_client_, oauth, calendar, alice
):
    other = Agent.objects.create(
        name="Other",
        client_type="public",
        authorization_grant_type="authorization-code",
        redirect_uris=oauth.agent.redirect_uris,
    )
    other_token = OAuthDriver(oauth.browser, other).tokens(calendar.resource, "list_events:read")[
        "access_token"
    ]
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    url = f"/admin/policies/agent/{oauth.agent.pk}/revoke-tokens/"

    assert admin_client_.get(url).status_code == 200
    assert introspect(calendar, token).json()["active"] is True
    admin_client_.post(url, {"confirm": "yes"})

    assert introspect(calendar, token).json() == {"active": False}
    assert introspect(calendar, other_token).json()["active"] is True


def test_the_agent_list_links_to_its_audit_events(admin_client_, agent):
    html = admin_client_.get("/admin/policies/agent/").content.decode()

    assert f"/admin/audit/auditevent/?agent={agent.client_id}" in html


# --- Delegations and approval ----------------------------------------------------------------------


@pytest.fixture
def pending(alice, agent, calendar) -> Delegation:
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")
    delegation = delegate(alice, agent, calendar.server, ["create_event:write"])
    assert delegation.status == Delegation.Status.PENDING
    return delegation


def test_an_approver_approves_a_pending_delegation_with_a_comment(pending):
    client, approver = staff_client("approver", Role.APPROVER)
    url = f"/admin/policies/delegation/{pending.pk}/decide/"

    assert "create_event:write" in client.get(url).content.decode()
    response = client.post(url, {"comment": "ok for the offsite", "approve": "1"})

    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.approved_by, pending.decision_comment) == (
        "approved",
        approver,
        "ok for the offsite",
    )


def test_denying_needs_a_comment_and_without_one_nothing_changes(pending):
    client, _ = staff_client("approver", Role.APPROVER)
    url = f"/admin/policies/delegation/{pending.pk}/decide/"

    response = client.post(url, {"comment": "", "deny": "1"})
    assert response.status_code == 200
    assert "Say why the delegation is denied: the human sees the comment." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == "pending"

    client.post(url, {"comment": "not for interns", "deny": "1"})
    pending.refresh_from_db()
    assert (pending.status, pending.decision_comment) == ("denied", "not for interns")


def test_deciding_twice_is_a_message_not_an_error(pending):
    client, _ = staff_client("approver", Role.APPROVER)
    url = f"/admin/policies/delegation/{pending.pk}/decide/"
    client.post(url, {"comment": "", "approve": "1"})

    response = client.post(url, {"comment": "late", "deny": "1"})

    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == "approved"


def test_an_approver_cannot_open_agents_servers_or_revoke(pending):
    client, _ = staff_client("approver", Role.APPROVER)

    assert client.get("/admin/policies/agent/").status_code == 403
    assert client.get("/admin/policies/mcpserver/").status_code == 403
    client.post("/admin/policies/delegation/", {"action": "revoke", "_selected_action": [pending.pk]})
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_an_auditor_cannot_approve(pending):
    client, _ = staff_client("auditor", Role.COMPLIANCE_AUDITOR)

    assert (
        client.post(f"/admin/policies/delegation/{pending.pk}/decide/", {"approve": "1"}).status_code == 403
    )
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_the_approvers_email_links_to_the_decide_page(pending):
    approver = User.objects.create_user("ann", email="ann@example.com")
    assign_role(approver, Role.APPROVER)

    assert notify_approvers(pending.pk) == 1

    assert f"http://testserver/admin/policies/delegation/{pending.pk}/decide/" in outbox.outbox[0].body


# --- Tokens and people ----------------------------------------------------------------------------


def test_token_pages_show_metadata_never_the_token_and_revoke_one_token(admin_client_, oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    listing = admin_client_.get("/admin/policies/accesstoken/").content.decode()
    refresh_listing = admin_client_.get("/admin/policies/refreshtoken/").content.decode()
    assert "list_events:read" in listing and "calendar" in listing
    assert tokens["access_token"] not in listing and tokens["refresh_token"] not in refresh_listing
    token = AccessToken.objects.get()
    assert (
        tokens["access_token"]
        not in admin_client_.get(f"/admin/policies/accesstoken/{token.pk}/change/").content.decode()
    )

    admin_client_.post("/admin/policies/accesstoken/", {"action": "revoke", "_selected_action": [token.pk]})

    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}


def test_revoking_all_delegations_of_a_person_asks_then_revokes_only_theirs(
    admin_client_, oauth, alice, calendar
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    bob = User.objects.create_user("bob", password="bob-password-123")
    allow_delegation("staff", [bob], calendar.server, ["list_events:read"])
    bobs = delegate(bob, oauth.agent, calendar.server, ["list_events:read"])
    url = f"/admin/auth/user/{alice.pk}/revoke-delegations/"

    assert admin_client_.get(url).status_code == 200
    admin_client_.post(url, {"confirm": "yes"})

    assert introspect(calendar, token).json() == {"active": False}
    bobs.refresh_from_db()
    assert bobs.status == "approved"
    assert "/admin/audit/auditevent/?human=alice" in admin_client_.get("/admin/auth/user/").content.decode()


def change_form_data(page) -> dict:
    """What a browser submits from an admin change page as it was shown."""
    data = {}
    for bound in page.context["adminform"].form:
        widget, value = bound.field.widget, bound.value()
        if isinstance(widget, MultiWidget):
            for index, part in enumerate(widget.decompress(value)):
                data[f"{bound.html_name}_{index}"] = "" if part is None else str(part)
        elif value is True:
            data[bound.html_name] = "on"
        elif value not in (None, False):
            data[bound.html_name] = value
    return data


def test_a_security_admin_can_give_console_roles_but_not_superuser_status_or_raw_permissions(admin_client_):
    me = User.objects.get(username="secadmin")
    url = f"/admin/auth/user/{me.pk}/change/"
    data = change_form_data(admin_client_.get(url))
    approvers = Group.objects.get(name=Role.APPROVER.value)
    data.update(
        email="sec@example.com",
        is_superuser="on",
        user_permissions=[Permission.objects.get(codename="delete_user").pk],
        groups=[*data["groups"], approvers.pk],
    )

    response = admin_client_.post(url, data)

    assert response.status_code == 302
    me.refresh_from_db()
    assert me.email == "sec@example.com"  # the rest of the form was saved
    assert set(me.groups.values_list("name", flat=True)) == {Role.SECURITY_ADMIN.value, Role.APPROVER.value}
    assert me.is_superuser is False
    assert not me.user_permissions.exists()
    assert not me.has_perm("auth.delete_user")


def test_a_security_admin_cannot_change_a_superusers_account_or_password(admin_client_):
    root = User.objects.create_superuser("root", password="root-password-123")
    superuser_client, _ = staff_client("root2", superuser=True)
    data = change_form_data(superuser_client.get(f"/admin/auth/user/{root.pk}/change/"))

    changed = admin_client_.post(f"/admin/auth/user/{root.pk}/change/", {**data, "email": "me@evil.example"})
    password = admin_client_.post(
        f"/admin/auth/user/{root.pk}/password/",
        {"password1": "taken-over-123", "password2": "taken-over-123", "usable_password": "true"},
    )

    assert (changed.status_code, password.status_code) == (403, 403)
    root.refresh_from_db()
    assert root.email == "" and root.check_password("root-password-123")


def test_a_security_admin_cannot_set_the_permissions_of_a_group(admin_client_):
    every_permission = list(Permission.objects.values_list("pk", flat=True))
    approvers = Group.objects.get(name=Role.APPROVER.value)
    before = set(approvers.permissions.all())

    admin_client_.post(
        f"/admin/auth/group/{approvers.pk}/change/", {"name": approvers.name, "permissions": every_permission}
    )
    admin_client_.post("/admin/auth/group/add/", {"name": "backdoor", "permissions": every_permission})

    assert set(approvers.permissions.all()) == before
    assert not Group.objects.filter(name="backdoor", permissions__isnull=False).exists()


def test_a_role_group_keeps_its_name_and_cannot_be_deleted(admin_client_):
    approvers = Group.objects.get(name=Role.APPROVER.value)
    member = User.objects.create_user("reviewer")
    assign_role(member, Role.APPROVER)

    admin_client_.post(f"/admin/auth/group/{approvers.pk}/change/", {"name": "Former approvers"})
    deleted = admin_client_.post(f"/admin/auth/group/{approvers.pk}/delete/", {"post": "yes"})

    assert deleted.status_code == 403
    approvers.refresh_from_db()
    assert approvers.name == Role.APPROVER.value
    assert has_role(member, Role.APPROVER)


# --- Objects that do not exist ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/admin/policies/mcpserver/99999/rotate-credentials/",
        "/admin/policies/mcpserver/99999/import-tools/",
        "/admin/policies/mcpserver/99999/revoke-everything/",
        "/admin/policies/mcpserver/abc/rotate-credentials/",
        "/admin/policies/agent/99999/approve/",
        "/admin/policies/agent/99999/suspend/",
        "/admin/policies/agent/99999/reactivate/",
        "/admin/policies/agent/99999/revoke-tokens/",
        "/admin/auth/user/99999/revoke-delegations/",
        "/admin/policies/delegation/99999/decide/",
    ],
)
def test_an_admin_action_on_an_object_that_does_not_exist_is_a_404(url):
    client, _ = staff_client("root", superuser=True)

    assert client.get(url).status_code == 404
    assert client.post(url, {"confirm": "yes", "approve": "1"}).status_code == 404


def test_importing_tools_in_the_admin_needs_the_right_to_add_and_change_tools(calendar):
    user = User.objects.create_user("server-editor", password="staff-password-123", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_mcpserver", "change_mcpserver", "view_tool"])
    )
    client = Client()
    client.force_login(user)
    url = f"/admin/policies/mcpserver/{calendar.server.pk}/import-tools/"

    assert client.get(url).status_code == 403
    assert client.post(url, {"token": ""}).status_code == 403
    assert not AuditEvent.objects.filter(event_type="tools.imported").exists()


# --- Bad input in the other forms ------------------------------------------------------------------


def test_an_agent_with_a_plain_http_redirect_to_a_remote_host_is_refused(admin_client_):
    response = admin_client_.post(
        "/admin/policies/agent/add/",
        {
            "name": "Leaky",
            "client_id": "leaky",
            "client_type": "public",
            "authorization_grant_type": "authorization-code",
            "redirect_uris": "http://evil.example.com/callback",
            "client_secret": "",
        },
    )

    assert response.status_code == 200
    assert "http is allowed for loopback hosts only" in response.content.decode()
    assert not Agent.objects.filter(client_id="leaky").exists()


def test_a_second_main_policy_for_the_same_group_is_refused(admin_client_, alice):
    policy = DelegationPolicy.objects.get(group__name="staff")

    response = admin_client_.post(
        "/admin/policies/delegationpolicy/add/", {"group": policy.group.pk, "name": "", "approval_risk": ""}
    )

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert DelegationPolicy.objects.filter(group=policy.group).count() == 1


def test_policy_scopes_above_a_named_agents_ceiling_are_refused_and_change_nothing(
    admin_client_, alice, agent
):
    agent.has_scope_ceiling = True
    agent.save()
    agent.scope_ceiling.set([ToolAction.objects.get(tool__name="list_events")])
    write = ToolAction.objects.get(tool__name="create_event")
    group = DelegationPolicy.objects.get(group__name="staff").group

    response = admin_client_.post(
        "/admin/policies/delegationpolicy/add/",
        {"group": group.pk, "name": "research", "agents": [agent.pk], "may_delegate": [write.pk]},
    )

    assert response.status_code == 200
    assert "Above the agent&#x27;s scope ceiling: calendar: create_event:write" in response.content.decode()
    assert not DelegationPolicy.objects.filter(name="research").exists()


def test_an_unknown_policy_setting_value_is_refused(admin_client_):
    response = admin_client_.post(
        "/admin/policies/policysetting/add/", {"key": "agent_registration", "value": "let_everyone_in"}
    )

    assert response.status_code == 200
    assert "Use one of: auto_approve, require_approval." in response.content.decode()
    assert not PolicySetting.objects.exists()
