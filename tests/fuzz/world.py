"""A small console with one of everything, built through the real services, for the fuzzers to
send requests at: servers with tools, humans in every role, agents, approved, pending and revoked
delegations with live tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import Group, User

from audit.models import AuditExport
from console.roles import Role
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    McpServer,
    PolicySetting,
    RefreshToken,
    Tool,
)
from policies.revocation import revoke_delegation
from policies.services import delegate
from tests.api_support import make_agent, person, tokens_for
from tests.conftest import RegisteredServer, allow_delegation, make_server


@dataclass
class World:
    calendar: RegisteredServer
    mail: RegisteredServer
    admin: User
    alice: User
    agent: Agent
    # Raw token values, for the fuzzers to put where a token goes some of the time.
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)

    def known_values(self) -> dict[str, list[str]]:
        """Real values for body fields and query parameters of these names."""
        return {
            "token": self.access_tokens + self.refresh_tokens,
            "refresh_token": self.refresh_tokens,
            "client_id": [self.agent.client_id],
            "resource": [self.calendar.resource, self.mail.resource],
            "tool": ["list_events", "create_event", "send"],
            "action": ["read", "write"],
            "server": ["calendar", "mail"],
            "human": ["alice"],
            "agent": [self.agent.client_id],
        }


def build_world() -> World:
    calendar = make_server(
        "calendar",
        "https://calendar.example.com/mcp",
        {"list_events": ("low", ["read"]), "create_event": ("high", ["write"])},
    )
    mail = make_server("mail", "https://mail.example.com/mcp", {"send": ("high", ["write"])})
    admin = person("sec", Role.SECURITY_ADMIN)
    person("approver", Role.APPROVER)
    person("auditor", Role.COMPLIANCE_AUDITOR)
    alice = person("alice")
    bob = person("bob")
    allow_delegation("staff", [alice, bob], calendar.server, ["list_events:read", "create_event:write"])
    allow_delegation("mailers", [alice], mail.server, ["send:write"])
    DelegationPolicy.objects.filter(group__name="mailers").update(approval_risk=Tool.Risk.HIGH)
    agent = make_agent("Research agent", team="research")
    other = make_agent("Mail agent")
    world = World(calendar, mail, admin, alice, agent)

    # An approved delegation with live tokens, one waiting for an approver, one revoked.
    approved = delegate(alice, agent, calendar.server, {"list_events:read", "create_event:write"})
    pending = delegate(alice, other, mail.server, {"send:write"})
    assert pending.status == Delegation.Status.PENDING
    ended = delegate(bob, agent, calendar.server, {"list_events:read"})
    for name, delegation in (("alice", approved), ("bob", ended)):
        tokens = tokens_for(delegation, name)
        world.access_tokens.append(f"access-{name}")
        world.refresh_tokens.append(f"refresh-{name}")
        assert tokens.access.pk and tokens.refresh.pk
    revoke_delegation(ended, by=admin)  # bob's tokens are now revoked ones
    PolicySetting.objects.create(key=PolicySetting.AGENT_REGISTRATION, value="auto_approve")
    return world


def known_path_values() -> dict[str, list[str]]:
    """Real path parameters by the collection they address, as they are now."""
    ids = {
        "agents": Agent.objects,
        "tools": Tool.objects,
        "policies": DelegationPolicy.objects,
        "groups": Group.objects,
        "delegations": Delegation.objects,
        "access-tokens": AccessToken.objects,
        "refresh-tokens": RefreshToken.objects,
        "exports": AuditExport.objects,
    }
    values = {name: [str(pk) for pk in manager.values_list("pk", flat=True)] for name, manager in ids.items()}
    values["servers"] = list(McpServer.objects.values_list("name", flat=True))
    values["humans"] = list(User.objects.values_list("username", flat=True))
    values["policy-settings"] = list(PolicySetting.objects.values_list("key", flat=True))
    return values
