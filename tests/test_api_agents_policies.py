"""Management API: agents (registration, lifecycle, ceiling, lifetimes, owner, team) and policies."""

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, User

from audit.models import AuditEvent
from console.roles import Role
from policies.models import Agent, Delegation, DelegationPolicy, PolicySetting
from tests.api_support import api_as, make_agent, person
from tests.conftest import OAuthDriver, introspect


@pytest.fixture
def admin_api(db):
    return api_as(person("sec", Role.SECURITY_ADMIN))


def test_an_agent_is_registered_with_owner_team_ceiling_and_lifetimes(admin_api, calendar, alice):
    response = admin_api.post(
        "/api/agents/",
        {
            "name": "Scheduler",
            "client_type": "confidential",
            "redirect_uris": "https://scheduler.example.com/callback",
            "owner": "alice",
            "team": "platform",
            "has_scope_ceiling": True,
            "scope_ceiling": {"calendar": ["list_events:read"]},
            "access_token_lifetime": 300,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    agent = Agent.objects.get(client_id=body["client_id"])
    assert agent.user == alice and agent.team == "platform" and agent.access_token_lifetime == 300
    assert body["scope_ceiling"] == {"calendar": ["list_events:read"]}
    assert [a.scope for a in agent.scope_ceiling.all()] == ["list_events:read"]
    # The confidential secret is shown once and stored hashed.
    assert body["client_secret"] and agent.client_secret != body["client_secret"]
    assert "client_secret" not in admin_api.get(f"/api/agents/{agent.pk}/").json()


def test_suspending_an_agent_makes_its_token_inactive_and_reactivating_restores_it(
    admin_api, oauth, calendar
):
    token = oauth.tokens(calendar.resource)["access_token"]

    suspended = admin_api.post(f"/api/agents/{oauth.agent.pk}/suspend/")

    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert introspect(calendar, token).json()["active"] is False
    assert AuditEvent.objects.filter(event_type="agent.suspended", actor_username="sec").exists()

    assert admin_api.post(f"/api/agents/{oauth.agent.pk}/reactivate/").json()["status"] == "active"
    assert introspect(calendar, token).json()["active"] is True


def test_approve_applies_to_pending_agents_only(admin_api, db):
    pending = make_agent("Self-registered", status=Agent.Status.PENDING)
    suspended = make_agent("Suspended", status=Agent.Status.SUSPENDED)

    assert admin_api.post(f"/api/agents/{pending.pk}/approve/").json()["status"] == "active"
    refused = admin_api.post(f"/api/agents/{suspended.pk}/approve/")

    assert refused.status_code == 409
    assert "suspended" in refused.json()["detail"]
    suspended.refresh_from_db()
    assert suspended.status == Agent.Status.SUSPENDED


def test_revoking_an_agents_tokens_leaves_other_agents_working(admin_api, oauth, browser, calendar):
    other = OAuthDriver(browser, make_agent("Other agent"))
    token = oauth.tokens(calendar.resource)["access_token"]
    other_token = other.tokens(calendar.resource)["access_token"]

    response = admin_api.post(f"/api/agents/{oauth.agent.pk}/revoke-tokens/")

    assert response.json() == {"revoked": 1}
    assert introspect(calendar, token).json()["active"] is False
    assert introspect(calendar, other_token).json()["active"] is True


def test_a_policy_is_written_with_agents_approval_and_lifetime(admin_api, calendar, agent):
    Group.objects.create(name="engineers")

    response = admin_api.post(
        "/api/policies/",
        {
            "group": "engineers",
            "name": "research",
            "agents": [agent.client_id],
            "may_delegate": {"calendar": ["list_events:read", "create_event:write"]},
            "approval_risk": "high",
            "approval_required": {"calendar": ["list_events:read"]},
            "max_delegation_lifetime": 86400,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    policy = DelegationPolicy.objects.get(group__name="engineers", name="research")
    assert list(policy.agents.all()) == [agent]
    assert sorted(a.scope for a in policy.may_delegate.all()) == ["create_event:write", "list_events:read"]
    assert policy.approval_risk == "high" and policy.max_delegation_lifetime == 86400
    assert response.json()["approval_required"] == {"calendar": ["list_events:read"]}


def test_a_policy_change_takes_effect_at_the_next_introspection(admin_api, oauth, calendar):
    token = oauth.tokens(calendar.resource, grant=["list_events:read"])["access_token"]
    policy = DelegationPolicy.objects.get(group__name="staff")

    response = admin_api.patch(
        f"/api/policies/{policy.pk}/", {"may_delegate": {"calendar": ["create_event:write"]}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert introspect(calendar, token).json()["active"] is False
    assert (
        Delegation.objects.get(agent=oauth.agent).status == "approved"
    )  # the policy cut it, not a revocation


def test_redirect_uris_follow_the_agent_rules(admin_api, db):
    response = admin_api.post(
        "/api/agents/",
        {"name": "Sloppy", "client_type": "public", "redirect_uris": "http://evil.example.com/cb"},
        format="json",
    )

    assert response.status_code == 400
    assert "loopback" in str(response.json()["redirect_uris"])
    assert not Agent.objects.filter(name="Sloppy").exists()


def test_the_api_gives_no_group_permissions_and_no_human_superuser_status(admin_api, alice):
    approvers = Group.objects.get(name=Role.APPROVER.value)
    before = set(approvers.permissions.values_list("codename", flat=True))
    raw = {"permissions": ["auth.delete_user"], "is_superuser": True}

    admin_api.patch(f"/api/groups/{approvers.pk}/", raw, format="json")
    admin_api.post("/api/groups/", {"name": "backdoor", **raw}, format="json")
    admin_api.patch("/api/humans/alice/", raw, format="json")

    assert set(approvers.permissions.values_list("codename", flat=True)) == before
    assert not Group.objects.filter(name="backdoor", permissions__isnull=False).exists()
    alice.refresh_from_db()
    assert alice.is_superuser is False and not alice.user_permissions.exists()


def test_a_role_group_keeps_its_name_and_cannot_be_deleted_through_the_api(admin_api):
    approvers = Group.objects.get(name=Role.APPROVER.value)
    # Deleting groups is a superuser's right only; even a superuser cannot delete a role's group.
    superuser_api = api_as(User.objects.create_superuser("root", password="root-password-123"))

    renamed = admin_api.patch(f"/api/groups/{approvers.pk}/", {"name": "Former approvers"}, format="json")
    deleted = superuser_api.delete(f"/api/groups/{approvers.pk}/")

    assert renamed.status_code == 400 and "keeps its name" in str(renamed.json()["name"])
    assert deleted.status_code == 400 and "cannot be deleted" in str(deleted.json()["name"])
    assert Group.objects.filter(pk=approvers.pk, name=Role.APPROVER.value).exists()


def test_groups_and_the_registration_setting_are_managed_through_the_api(admin_api, alice):
    group = admin_api.post("/api/groups/", {"name": "researchers", "members": ["alice"]}, format="json")
    setting = admin_api.post(
        "/api/policy-settings/", {"key": "agent_registration", "value": "require_approval"}, format="json"
    )

    assert group.status_code == 201, group.content
    assert list(Group.objects.get(name="researchers").user_set.all()) == [alice]
    assert setting.status_code == 201, setting.content
    assert PolicySetting.initial_agent_status() == Agent.Status.PENDING


def test_a_configuration_change_through_the_api_is_logged_with_the_acting_user(admin_api, calendar):
    tool = calendar.server.tools.get(name="list_events")

    admin_api.patch(f"/api/tools/{tool.pk}/", {"risk": "medium"}, format="json")

    entry = LogEntry.objects.get_for_object(tool).latest("timestamp")
    assert entry.actor.username == "sec"
    assert entry.changes_dict["risk"] == ["low", "medium"]
