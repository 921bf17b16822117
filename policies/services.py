"""
Operations on delegations, servers and agents. Every door (consent, token endpoint, console,
commands) changes this state through these functions, so each change is audited once.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.events import record
from policies.models import AccessToken, Agent, Delegation, McpServer, RefreshToken


@transaction.atomic
def delegate(human: AbstractBaseUser, agent: Agent, server: McpServer, scopes: Iterable[str]) -> Delegation:
    """Record the human's consent: the live delegation of (human, agent, server) now has ``scopes``.

    One live delegation per human, agent and server: consenting again replaces its scopes, and
    tokens minted earlier are cut down to them at introspection.
    """
    scope = " ".join(sorted(set(scopes)))
    # The partial unique constraint settles a race between two consents: the loser updates.
    delegation, created = Delegation.objects.select_for_update().get_or_create(
        human=human,
        agent=agent,
        server=server,
        status=Delegation.Status.APPROVED,
        defaults={"scope": scope},
    )
    if not created:
        delegation.scope = scope
        delegation.save(update_fields=["scope", "updated"])
    record(
        "consent.granted",
        outcome="allow",
        human=human,
        agent=agent,
        server=server,
        delegation=delegation,
        detail={"scope": scope},
    )
    return delegation


@transaction.atomic
def revoke_delegations(delegations: QuerySet[Delegation], *, by: AbstractBaseUser | None, why: str) -> int:
    """Revoke the live delegations in ``delegations`` and every token hanging off them.

    Access tokens are deleted (as DOT's own revocation does) and refresh tokens marked revoked,
    so the very next introspection or refresh fails; nothing outside these delegations changes.
    """
    now = timezone.now()
    targets = list(
        delegations.select_for_update()
        .filter(status__in=[Delegation.Status.APPROVED, Delegation.Status.PENDING])
        .select_related("human", "agent", "server")
    )
    ids = [d.pk for d in targets]
    RefreshToken.objects.filter(delegation_id__in=ids, revoked__isnull=True).update(
        revoked=now, updated=now, access_token=None
    )
    AccessToken.objects.filter(delegation_id__in=ids).delete()
    Delegation.objects.filter(pk__in=ids).update(status=Delegation.Status.REVOKED, revoked=now, updated=now)
    for delegation in targets:
        record(
            "delegation.revoked",
            outcome="allow",
            reason=why,
            actor=by,
            human=delegation.human,
            agent=delegation.agent,
            server=delegation.server,
            delegation=delegation,
        )
    return len(targets)


def revoke_delegation(delegation: Delegation, *, by: AbstractBaseUser | None) -> int:
    return revoke_delegations(Delegation.objects.filter(pk=delegation.pk), by=by, why="delegation")
