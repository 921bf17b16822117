"""The rules inside decide(): per-agent policies, the agent's scope ceiling, which scopes need an
approver, the longest delegation lifetime, and per-agent token lifetimes; and the input rules of
servers and settings that every door (admin, API, register_server) shares through the models."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.utils import timezone

from policies.decisions import Reason, decide
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    McpServer,
    PolicySetting,
    ToolAction,
)
from tests.conftest import REDIRECT_URI, introspect

BOTH = "list_events:read create_event:write"


def action(server, scope: str) -> ToolAction:
    tool, name = scope.split(":")
    return ToolAction.objects.get(tool__server=server, tool__name=tool, name=name)


def make_agent(name: str) -> Agent:
    return Agent.objects.create(
        name=name,
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
    )


def consent(human, agent, calendar, scopes=BOTH):
    return decide(agent=agent, server=calendar.server, human=human, scopes=scopes.split())


@pytest.fixture
def ceiling_read_only(agent, calendar):
    agent.has_scope_ceiling = True
    agent.save()
    agent.scope_ceiling.set([action(calendar.server, "list_events:read")])


def test_an_agent_never_gets_a_scope_above_its_ceiling(oauth, calendar, ceiling_read_only):
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource, BOTH))
    rows = {row["scope"]: row["refused"] for row in page.context["scope_rows"]}
    assert rows == {"list_events:read": "", "create_event:write": Reason.ABOVE_CEILING}
    assert b"This agent may never get this permission." in page.content

    # A forged form that ticks it anyway gets the ceiling.
    tokens = oauth.tokens(calendar.resource, BOTH, grant=["list_events:read", "create_event:write"])
    assert tokens["scope"] == "list_events:read"
    assert Delegation.objects.get().scope == "list_events:read"


def test_an_empty_ceiling_that_is_on_allows_nothing_and_off_means_only_the_policies(alice, agent, calendar):
    agent.has_scope_ceiling = True
    agent.save()
    decision = consent(alice, agent, calendar)
    assert (decision.allowed, decision.reason) == (False, Reason.ABOVE_CEILING)

    agent.has_scope_ceiling = False
    agent.save()
    assert consent(alice, agent, calendar).scopes == set(BOTH.split())


def test_lowering_the_ceiling_takes_effect_at_the_next_introspection(oauth, calendar, agent):
    token = oauth.tokens(calendar.resource, BOTH)["access_token"]
    agent.has_scope_ceiling = True
    agent.save()
    agent.scope_ceiling.set([action(calendar.server, "list_events:read")])

    body = introspect(calendar, token, tool="create_event", action="write").json()
    assert body["scope"] == "list_events:read"
    assert body["decision"] == {
        "tool": "create_event",
        "action": "write",
        "allowed": False,
        "reason": "scope_missing",
    }


def test_a_policy_for_one_agent_lets_its_group_delegate_more_to_that_agent_only(calendar):
    bob = User.objects.create_user("bob")
    group = Group.objects.create(name="researchers")
    group.user_set.add(bob)
    trusted, other = make_agent("Trusted"), make_agent("Other")
    everyone = DelegationPolicy.objects.create(group=group)
    everyone.may_delegate.add(action(calendar.server, "list_events:read"))
    writer = DelegationPolicy.objects.create(group=group, name="trusted writer")
    writer.agents.add(trusted)
    writer.may_delegate.add(action(calendar.server, "create_event:write"))

    assert consent(bob, trusted, calendar).scopes == set(BOTH.split())
    assert consent(bob, other, calendar).scopes == {"list_events:read"}


def test_scopes_need_an_approver_by_risk_or_explicitly(alice, agent, calendar):
    policy = DelegationPolicy.objects.get(group__name="staff")
    assert consent(alice, agent, calendar).needs_approval == set()

    policy.approval_risk = "medium"
    policy.save()
    assert consent(alice, agent, calendar).needs_approval == {"create_event:write"}

    policy.approval_risk = ""
    policy.save()
    policy.approval_required.add(action(calendar.server, "list_events:read"))
    assert consent(alice, agent, calendar).needs_approval == {"list_events:read"}


def test_the_strictest_policy_granting_a_scope_sets_approval_and_lifetime(alice, agent, calendar):
    staff = DelegationPolicy.objects.get(group__name="staff")
    staff.max_delegation_lifetime = 7200
    staff.save()
    agent_policy = DelegationPolicy.objects.create(
        group=staff.group, name="short", approval_risk="high", max_delegation_lifetime=600
    )
    agent_policy.agents.add(agent)
    agent_policy.may_delegate.add(action(calendar.server, "create_event:write"))

    decision = consent(alice, agent, calendar)
    assert decision.needs_approval == {"create_event:write"}
    assert decision.lifetime == 600
    assert consent(alice, agent, calendar, "list_events:read").lifetime == 7200


def test_a_delegation_lives_no_longer_than_the_policy_allows(oauth, calendar):
    DelegationPolicy.objects.filter(group__name="staff").update(max_delegation_lifetime=3600)
    before = timezone.now()
    oauth.tokens(calendar.resource, "list_events:read")

    expires = Delegation.objects.get().expires
    assert before + timedelta(seconds=3600) <= expires <= timezone.now() + timedelta(seconds=3600)


def test_an_agents_own_access_token_lifetime_is_applied_and_announced(oauth, calendar, agent):
    agent.access_token_lifetime = 120
    agent.save()
    before = timezone.now()

    tokens = oauth.tokens(calendar.resource, "list_events:read")

    assert tokens["expires_in"] == 120
    token = AccessToken.objects.get()
    assert before + timedelta(seconds=120) <= token.expires <= timezone.now() + timedelta(seconds=120)


def test_an_agents_own_refresh_token_lifetime_ends_its_refresh_tokens(oauth, calendar, agent):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    # The access token ran out an hour ago: the console default (30 days) still lets it refresh,
    # the agent's own refresh lifetime of ten minutes does not.
    AccessToken.objects.update(expires=timezone.now() - timedelta(hours=1))
    agent.refresh_token_lifetime = 600
    agent.save()

    assert oauth.refresh(tokens["refresh_token"]).status_code == 400

    agent.refresh_token_lifetime = None
    agent.save()
    assert oauth.refresh(tokens["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "scope, error",
    [("calendar:nope", "invalid_scope"), ("list_events:read other:thing", "invalid_scope")],
)
def test_unknown_scopes_are_refused_to_the_agent_and_change_nothing(oauth, calendar, scope, error):
    response = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource, scope))
    assert response.status_code == 302
    assert f"error={error}" in response["Location"]
    assert not Delegation.objects.exists()


def test_a_forged_consent_above_the_ceiling_only_is_refused_without_a_delegation(
    oauth, calendar, ceiling_read_only
):
    response = oauth.consent(oauth.authorize_params(calendar.resource, BOTH), grant=["create_event:write"])
    assert response.status_code == 302
    assert "error=access_denied" in response["Location"]
    assert not Delegation.objects.exists()


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"resource": "https://x.example.com/mcp#a"}, "resource", "must not contain a fragment"),
        (
            {"resource": "http://x.example.com/mcp"},
            "resource",
            "plain http is allowed for loopback hosts only",
        ),
        ({"resource": "ftp://x.example.com/mcp"}, "resource", "Use https"),
        ({"default_scopes": "list_events:read"}, "default_scopes", "Unknown scope(s) for this server"),
    ],
)
def test_a_server_with_a_bad_resource_or_unknown_default_scopes_does_not_validate(db, fields, field, message):
    server = McpServer(**{"name": "x", "resource": "https://x.example.com/mcp", **fields})
    server.set_new_credentials()

    with pytest.raises(ValidationError) as refused:
        server.full_clean()

    assert message in " ".join(refused.value.message_dict[field])


def test_a_loopback_server_with_default_scopes_of_its_own_tools_validates(calendar):
    server = calendar.server
    server.resource, server.default_scopes = "http://127.0.0.1:8001/mcp", "list_events:read"

    server.full_clean()


def test_a_policy_setting_must_be_a_known_key_with_one_of_its_values(db):
    with pytest.raises(ValidationError, match="Unknown setting"):
        PolicySetting(key="colour", value="red").full_clean()
    with pytest.raises(ValidationError, match="Use one of: auto_approve, require_approval"):
        PolicySetting(key="agent_registration", value="sometimes").full_clean()
    PolicySetting(key="agent_registration", value="require_approval").full_clean()
