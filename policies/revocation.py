"""
Revocation at every level: one token, one delegation, an agent, a human, an MCP server.

Each level revokes exactly the delegations and tokens below it. Access tokens are deleted (as
DOT's own revocation does) and refresh tokens marked revoked, so the very next introspection or
refresh fails; nothing outside the chosen delegations changes, but the tokens exchanged from
their tokens (RFC 8693, ``policies.exchange``), which are ended with them and recorded.
"""

from __future__ import annotations

from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.events import record
from policies.introspection import introspection_changed
from policies.models import AccessToken, Agent, Delegation, ExchangePolicy, McpServer, RefreshToken
from policies.tokens import token_actors


@transaction.atomic
def end_delegations(
    delegations: QuerySet[Delegation],
    *,
    by: AbstractBaseUser | None,
    why: str,
    status: str = Delegation.Status.REVOKED,
    comment: str = "",
) -> int:
    """Move the live delegations in ``delegations`` to ``status`` (revoked or expired).

    Their tokens are cut with them; returns how many delegations ended. ``comment`` tells the
    human why, where no approver did (e.g. a request that waited too long).
    """
    now = timezone.now()
    targets = list(
        delegations.select_for_update()
        .filter(status__in=Delegation.LIVE)
        .select_related("human", "agent", "server")
    )
    ids = [d.pk for d in targets]
    RefreshToken.objects.filter(delegation_id__in=ids, revoked__isnull=True).update(
        revoked=now, updated=now, access_token=None
    )
    revoke_derived_tokens(
        AccessToken.objects.filter(delegation_id__in=ids), by=by, why=why, exclude_delegations=ids
    )
    AccessToken.objects.filter(delegation_id__in=ids).delete()
    changes = {"status": status, "updated": now}
    if status == Delegation.Status.REVOKED:
        changes["revoked"] = now
    if comment:
        changes["decision_comment"] = comment
    Delegation.objects.filter(pk__in=ids).update(**changes)
    introspection_changed()  # a bulk update sends no signal
    for delegation in targets:
        record(
            f"delegation.{status}",
            outcome="allow",
            reason=why,
            actor=by,
            human=delegation.human,
            agent=delegation.agent,
            server=delegation.server,
            delegation=delegation,
            detail={"comment": comment} if comment else None,
        )
    return len(targets)


def revoke_delegations(delegations: QuerySet[Delegation], *, by: AbstractBaseUser | None, why: str) -> int:
    """Revoke the live delegations in ``delegations`` and every token hanging off them."""
    return end_delegations(delegations, by=by, why=why)


def revoke_delegation(delegation: Delegation, *, by: AbstractBaseUser | None) -> int:
    return end_delegations(Delegation.objects.filter(pk=delegation.pk), by=by, why="delegation")


def revoke_agent_tokens(agent: Agent, *, by: AbstractBaseUser | None) -> int:
    """Every delegation of one agent, for every human and server, with their tokens."""
    return end_delegations(Delegation.objects.filter(agent=agent), by=by, why="agent")


def revoke_human_delegations(human: AbstractBaseUser, *, by: AbstractBaseUser | None) -> int:
    """Every delegation one human gave, to any agent on any server."""
    return end_delegations(Delegation.objects.filter(human=human), by=by, why="human")


def revoke_server_delegations(server: McpServer, *, by: AbstractBaseUser | None) -> int:
    """Everything bound to one MCP server: its delegations and their tokens."""
    return end_delegations(Delegation.objects.filter(server=server), by=by, why="server")


@transaction.atomic
def revoke_token(token: AccessToken | RefreshToken, *, by: AbstractBaseUser | None) -> None:
    """Revoke one token and its pair (an access token's refresh token, or the reverse).

    The delegation stays: the agent may get a new token through it, unless it is revoked too.
    """
    if isinstance(token, RefreshToken):
        # Locked, so that of two revocations at once only one records it.
        token = RefreshToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked is not None:
            return  # revoked (and recorded) before; its access token went with it
    if isinstance(token, AccessToken):
        # The refresh token before the access token, in the order DOT's refresh rotation locks them.
        refresh = (
            RefreshToken.objects.select_for_update().filter(access_token=token, revoked__isnull=True).first()
        )
        access = token
    else:
        access, refresh = token.access_token, token
    if access is not None:
        revoke_derived_tokens(AccessToken.objects.filter(pk=access.pk), by=by, why="token")
    delegation = token.delegation
    record(
        "token.revoked",
        outcome="allow",
        reason="token",
        actor=by,
        human=token.user,
        agent=token.application,
        server=delegation.server if delegation else None,
        delegation=delegation,
        token=access,
        actors=token_actors(access) if access is not None else None,
        detail={"refresh_token_id": refresh.pk if refresh else None},
    )
    if refresh is not None:
        refresh.revoke()  # DOT's: marks it revoked and deletes its access token
    if access is not None:
        AccessToken.objects.filter(pk=access.pk).delete()


def revoke_derived_tokens(
    parents: QuerySet[AccessToken],
    *,
    by: AbstractBaseUser | None,
    why: str,
    exclude_delegations: Collection[int] = (),
    parents_too: bool = False,
) -> int:
    """End the tokens exchanged from ``parents`` (RFC 8693), at any depth: each is recorded as
    revoked (reason ``chain``) with the chain it had, then deleted. Returns how many.

    Every revocation calls this first, in its transaction, before deleting ``parents`` (a deleted
    parent would delete them anyway, as ``parent`` cascades, but silently). Each level is locked
    before the next is listed: an exchange holds its subject token's row until the new token
    commits (``policies.exchange``), so a token exchanged meanwhile is found too, rather than
    failing the revocation at commit on the foreign key. ``parents_too``: ``parents`` are ended
    and recorded the same way (the tokens of a hop that is deleted). Those on
    ``exclude_delegations`` are not recorded: the caller records those delegations' end.
    """
    related = ("application", "user", "exchange_policy", "delegation__server", "delegation__human")
    level = list(parents.select_for_update(of=("self",)).select_related(*related).order_by("pk"))
    ended = list(level) if parents_too else []
    while level:
        level = list(
            AccessToken.objects.select_for_update(of=("self",))
            .filter(parent__in=[token.pk for token in level])
            .select_related(*related)
            .order_by("pk")
        )
        ended += level
    for token in ended:
        if token.delegation_id in exclude_delegations:
            continue
        record(
            "token.revoked",
            outcome="allow",
            reason="chain",
            actor=by,
            human=token.user,
            agent=token.application,
            actors=token_actors(token),
            server=token.delegation.server,
            delegation=token.delegation,
            token=token,
            detail={"revoked": why, "parent_token_id": token.parent_id},
        )
    AccessToken.objects.filter(pk__in=[token.pk for token in ended]).delete()
    return len(ended)


def end_hop_tokens(sender, instance: ExchangePolicy, **kwargs) -> None:
    """``pre_delete`` of a hop policy (API, admin, a deleted MCP server): the tokens it made, and
    those exchanged from them, end with it and are recorded. Locked first, so that a token being
    exchanged through this hop right now is found too."""
    ExchangePolicy.objects.select_for_update().filter(pk=instance.pk).exists()
    revoke_derived_tokens(
        AccessToken.objects.filter(exchange_policy=instance), by=None, why="exchange_policy", parents_too=True
    )
