"""
Operations on delegations, servers and agents. Every door (consent, token endpoint, console,
API, commands) changes this state through these functions, so each change is audited once.

Approval lives in ``policies.approval`` and revocation in ``policies.revocation``; the names of
the team contract are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from audit.events import record
from policies.approval import (  # noqa: F401  (contract names)
    DelegationStateError,
    approve_delegation,
    deny_delegation,
    expire_delegations,
    expiry_for,
)
from policies.decisions import decide
from policies.models import Agent, Delegation, McpServer
from policies.revocation import (  # noqa: F401  (contract names)
    end_delegations,
    revoke_agent_tokens,
    revoke_delegation,
    revoke_delegations,
    revoke_human_delegations,
    revoke_server_delegations,
    revoke_token,
)


class DelegationRefused(ValueError):
    """The policy does not let this human delegate any of these scopes to this agent."""

    def __init__(self, reason: str):
        super().__init__(f"The policy refuses this delegation ({reason}).")
        self.reason = reason


@transaction.atomic
def delegate(
    human: AbstractBaseUser,
    agent: Agent,
    server: McpServer,
    scopes: Iterable[str],
    *,
    request: HttpRequest | None = None,
) -> Delegation:
    """Record the human's consent to the scopes the policy lets them grant of ``scopes``.

    Approved at once, replacing the scopes of the live delegation of (human, agent, server), or
    pending when a scope needs an approver: the approved one then keeps working until an approver
    decides. Either way the human's latest consent is what counts: it supersedes a request of
    theirs still waiting for an approver (revoked, reason "superseded"), so requests never stack.
    """
    decision = decide(agent=agent, server=server, human=human, scopes=scopes)
    if not decision.allowed:
        raise DelegationRefused(decision.reason)
    scope = " ".join(sorted(decision.scopes))
    # One consent of a human at a time, so that two at once cannot both leave a pending request.
    list(get_user_model().objects.select_for_update().filter(pk=human.pk).values_list("pk", flat=True))
    triple = {"human": human, "agent": agent, "server": server}
    waiting = Delegation.objects.filter(status=Delegation.Status.PENDING, **triple)
    superseded = list(waiting.select_for_update().values_list("pk", flat=True))
    if decision.needs_approval:
        delegation = Delegation.objects.create(status=Delegation.Status.PENDING, scope=scope, **triple)
    else:
        # The partial unique constraint settles a race with another door: the loser updates.
        delegation, created = Delegation.objects.select_for_update().get_or_create(
            status=Delegation.Status.APPROVED, defaults={"scope": scope}, **triple
        )
        delegation.scope = scope
        delegation.expires = expiry_for(decision.lifetime)
        if not created:
            delegation.save(update_fields=["scope", "expires", "updated"])
        elif delegation.expires is not None:
            delegation.save(update_fields=["expires"])
    status = delegation.status
    record(
        "consent.granted",
        outcome="allow",
        human=human,
        agent=agent,
        server=server,
        delegation=delegation,
        request=request,
        detail={"scope": scope, "status": status, "needs_approval": sorted(decision.needs_approval)},
    )
    if superseded:
        end_delegations(
            Delegation.objects.filter(pk__in=superseded),
            by=human,
            why="superseded",
            comment=f"Replaced by a newer request (#{delegation.pk}) for the same agent and server.",
        )
    if decision.needs_approval:
        from policies.tasks import notify_approvers

        # robust: a mail server that is down must not fail the consent that was just committed.
        transaction.on_commit(lambda: notify_approvers.delay(delegation.pk), robust=True)
    return delegation


# How often at most ``last_used`` is written: introspection is the hot path.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def note_delegation_used(delegation: Delegation) -> None:
    """Remember that a token of ``delegation`` was just used (for "My agents")."""
    now = timezone.now()
    if delegation.last_used is not None and delegation.last_used >= now - LAST_USED_RESOLUTION:
        return  # recent enough: introspection, the hot path, makes no write and no round trip
    # Conditional, so that concurrent introspections on several workers write once.
    Delegation.objects.filter(
        Q(last_used__isnull=True) | Q(last_used__lt=now - LAST_USED_RESOLUTION), pk=delegation.pk
    ).update(last_used=now)


@dataclass(frozen=True)
class AgentRow:
    """One line of "My agents": an agent acting (or waiting to act) for a human on one server."""

    delegation: Delegation
    agent: Agent
    server: McpServer
    scopes: list[str]
    since: datetime
    last_used: datetime | None
    status: str


def agents_of(human: AbstractBaseUser) -> list[AgentRow]:
    """The human's approved and pending delegations, newest first."""
    delegations = (
        Delegation.objects.filter(
            human=human, status__in=[Delegation.Status.APPROVED, Delegation.Status.PENDING]
        )
        .select_related("agent", "server")
        .order_by("-created")
    )
    return [
        AgentRow(d, d.agent, d.server, sorted(d.scopes), d.created, d.last_used, d.status)
        for d in delegations
    ]


class AgentStatusError(ValueError):
    """A status change an agent cannot make (e.g. suspending a pending agent)."""


# (from, to) -> the audit event of that change.
AGENT_TRANSITIONS = {
    (Agent.Status.PENDING, Agent.Status.ACTIVE): "agent.approved",
    (Agent.Status.ACTIVE, Agent.Status.SUSPENDED): "agent.suspended",
    (Agent.Status.PENDING, Agent.Status.SUSPENDED): "agent.suspended",
    (Agent.Status.SUSPENDED, Agent.Status.ACTIVE): "agent.reactivated",
}


@transaction.atomic
def set_agent_status(
    agent: Agent, status: str, *, by: AbstractBaseUser | None, only_from: str | None = None
) -> Agent:
    """Approve a pending agent, suspend one, or reactivate a suspended one.

    ``only_from`` is the status the caller's action promises to start from: "approve" passes
    pending, so it never reactivates a suspended agent, and "reactivate" never approves a pending one.
    A suspended agent's tokens stay stored but every introspection answers inactive, so
    reactivating it restores its integrations; revoke them to end them for good.
    """
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if only_from is not None and agent.status != only_from:
        raise AgentStatusError(
            f"The agent is {agent.status}; this action applies to {only_from} agents only."
        )
    if agent.status == status:
        return agent
    event = AGENT_TRANSITIONS.get((agent.status, status))
    if event is None:
        raise AgentStatusError(f"An agent that is {agent.status} cannot become {status}.")
    previous, agent.status = agent.status, status
    agent.save(update_fields=["status", "updated"])
    record(event, outcome="allow", actor=by, agent=agent, detail={"from": previous, "to": status})
    return agent


@transaction.atomic
def register_server(*, by: AbstractBaseUser | None, **fields) -> tuple[McpServer, str]:
    """Register an MCP server with fresh introspection credentials; returns it and its secret (shown once)."""
    server = McpServer(**fields)
    secret = server.set_new_credentials()
    server.full_clean()
    server.save()
    record("server.registered", outcome="allow", actor=by, server=server)
    return server, secret


@transaction.atomic
def rotate_server_credentials(server: McpServer, *, by: AbstractBaseUser | None) -> str:
    """New introspection credentials for ``server``; the old ones stop working at once."""
    secret = server.set_new_credentials()
    server.save(update_fields=["client_id", "secret_hash"])
    record("server.credentials_rotated", outcome="allow", actor=by, server=server)
    return secret
