"""The benchmark's data: a few objects through the ORM, the bulk (tokens, events) in SQL.

Millions of rows cannot go through the ORM in the time budget, so tokens and events are written
by ``INSERT ... SELECT generate_series``: each bulk token is stored as DOT stores one (an empty
``token`` column and ``token_checksum`` = SHA-256 of the raw value), so its raw value is
``<prefix><n>`` and known to the load generator. Columns the SQL does not name get the model
field's default, so a column added to a model later does not break the seeding.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.db import connection, models, transaction
from django.utils import timezone
from oauth2_provider.models import set_token_value

from audit.models import AuditEvent
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    McpServer,
    RefreshToken,
    Tool,
    ToolAction,
)
from policies.revocation import revoke_token

# Tools of the measured MCP server: {name: [actions]}; every scope goes into every delegation.
TOOLS = {"search": ["read"], "create_event": ["write"], "list_files": ["read"], "send_mail": ["write"]}
SCOPE = " ".join(sorted(f"{tool}:{action}" for tool, actions in TOOLS.items() for action in actions))
HUMANS = 50
LIVE, EXPIRED, FOREIGN, REVOKED = "bench-live-", "bench-expired-", "bench-foreign-", "bench-revoked-"
PAIRED, REFRESH = "bench-paired-", "bench-refresh-"
SEEDED_EVENT_TYPE = "bench.seeded"


@dataclass
class World:
    """What the load generators need to know about the seeded data."""

    server_client_id: str
    server_secret: str
    server_resource: str
    agent_client_id: str
    peer_client_id: str
    peer_secret: str
    peer_bearer: str
    tokens: int = 0  # live tokens LIVE1 .. LIVE<tokens>
    special: int = 64  # expired, foreign and revoked tokens of each kind
    refresh: list[int] = field(default_factory=lambda: [0, 0])  # REFRESH<a> .. REFRESH<b-1> unused


def _other_columns(model: type[models.Model], given: set[str]) -> dict[str, object]:
    """Default values of the concrete columns ``given`` leaves out (NULL ones stay NULL)."""
    values = {}
    for f in model._meta.concrete_fields:
        if f.column in given or f.primary_key or f.null:
            continue
        if not f.has_default():
            raise RuntimeError(f"{model.__name__}.{f.name} has no default: bench/seed.py must set it")
        values[f.column] = f.get_db_prep_save(f.get_default(), connection)
    return values


def _insert_select(model: type[models.Model], columns: dict[str, str], source: str, params: dict) -> int:
    """INSERT INTO model's table (columns: SQL expressions over ``source``), defaults elsewhere."""
    defaults = _other_columns(model, set(columns))
    names = [*columns, *defaults]
    exprs = [*columns.values(), *(f"%(default_{name})s" for name in defaults)]
    params = {**params, **{f"default_{name}": value for name, value in defaults.items()}}
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(names)}) SELECT {', '.join(exprs)} FROM {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def checksum_sql(prefix_param: str) -> str:
    return f"encode(sha256(convert_to(%({prefix_param})s || i, 'UTF8')), 'hex')"


def seed_world() -> World:
    """Servers, tools, humans in a policy group, an agent, delegations, the peer's client."""
    server, secret = _server("bench", "https://bench.example.com/mcp")
    other, _ = _server("other", "https://other.example.com/mcp")
    group = Group.objects.create(name="bench-staff")
    policy = DelegationPolicy.objects.create(group=group)
    policy.may_delegate.set(ToolAction.objects.filter(tool__server__in=[server, other]))
    humans = User.objects.bulk_create(User(username=f"bench-human-{n}") for n in range(HUMANS))
    group.user_set.add(*humans)
    agent = Agent.objects.create(
        name="Bench agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:53682/callback",
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    now = timezone.now()
    Delegation.objects.bulk_create(
        Delegation(
            human=h, agent=agent, server=s, scope=SCOPE, status=Delegation.Status.APPROVED, decided=now
        )
        for s in (server, other)
        for h in humans
    )
    # The peer deployment: a confidential client (DOT hashes its secret with Django's password
    # hasher) and, as DOT's docs describe, an access token holding the `introspection` scope.
    peer_secret = secrets.token_urlsafe(32)
    peer = Agent.objects.create(
        name="Peer resource server",
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_CLIENT_CREDENTIALS,
        client_secret=peer_secret,
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    peer_bearer = secrets.token_urlsafe(32)
    bearer = AccessToken(application=peer, scope="introspection", expires=now + timedelta(days=1))
    set_token_value(bearer, peer_bearer)
    bearer.save()
    return World(
        server_client_id=server.client_id,
        server_secret=secret,
        server_resource=server.resource,
        agent_client_id=agent.client_id,
        peer_client_id=peer.client_id,
        peer_secret=peer_secret,
        peer_bearer=peer_bearer,
    )


def _server(name: str, resource: str) -> tuple[McpServer, str]:
    server = McpServer(name=name, resource=resource)
    secret = server.set_new_credentials()
    server.save()
    for tool_name, actions in TOOLS.items():
        tool = Tool.objects.create(server=server, name=tool_name, description=f"{tool_name} tool")
        for action in actions:
            ToolAction.objects.create(tool=tool, name=action)
    return server, secret


def _delegations(resource: str) -> list[int]:
    return list(
        Delegation.objects.filter(server__resource=resource, agent__name="Bench agent")
        .order_by("id")
        .values_list("id", flat=True)
    )


def insert_access_tokens(prefix: str, first: int, last: int, resource: str, lifetime: timedelta) -> int:
    """Access tokens <prefix><first> .. <prefix><last>, spread over the server's delegations."""
    ids = _delegations(resource)
    columns = {
        "token": "''",
        "token_checksum": checksum_sql("prefix"),
        "expires": "now() + %(lifetime)s",
        "scope": "%(scope)s",
        "resource": "%(resource)s::jsonb",
        "created": "now()",
        "updated": "now()",
        "application_id": "d.agent_id",
        "user_id": "d.human_id",
        "delegation_id": "d.id",
    }
    source = (
        "generate_series(%(first)s, %(last)s) AS i JOIN policies_delegation d "
        "ON d.id = (%(ids)s::bigint[])[1 + i %% %(count)s]"
    )
    params = {
        "prefix": prefix,
        "first": first,
        "last": last,
        "lifetime": lifetime,
        "scope": SCOPE,
        "resource": json.dumps([resource]),
        "ids": ids,
        "count": len(ids),
    }
    with transaction.atomic():
        return _insert_select(AccessToken, columns, source, params)


def seed_tokens(world: World, total: int) -> None:
    """Grow the live tokens to ``total`` (the first call also seeds the special ones)."""
    if world.tokens == 0:
        other = "https://other.example.com/mcp"
        insert_access_tokens(EXPIRED, 1, world.special, world.server_resource, timedelta(hours=-1))
        insert_access_tokens(FOREIGN, 1, world.special, other, timedelta(days=1))
        insert_access_tokens(REVOKED, 1, world.special, world.server_resource, timedelta(days=1))
        # Revoked through the console's own revocation (which records each one).
        for token in AccessToken.objects.filter(token_checksum__in=_checksums(REVOKED, world.special)):
            revoke_token(token, by=None)
    if total > world.tokens:
        insert_access_tokens(LIVE, world.tokens + 1, total, world.server_resource, timedelta(days=1))
        world.tokens = total
    _analyze(AccessToken)


def seed_refresh_tokens(world: World, count: int) -> tuple[int, int]:
    """``count`` fresh refresh tokens, each paired with its access token as DOT pairs them."""
    first, last = world.refresh[1] + 1, world.refresh[1] + count
    insert_access_tokens(PAIRED, first, last, world.server_resource, timedelta(minutes=15))
    columns = {
        "token": "''",
        "token_checksum": checksum_sql("prefix"),
        "token_family": "gen_random_uuid()",
        "resource": "a.resource",
        "created": "now()",
        "updated": "now()",
        "access_token_id": "a.id",
        "application_id": "a.application_id",
        "user_id": "a.user_id",
        "delegation_id": "a.delegation_id",
    }
    source = (
        "generate_series(%(first)s, %(last)s) AS i JOIN policies_accesstoken a "
        f"ON a.token_checksum = {checksum_sql('paired')}"
    )
    with transaction.atomic():
        _insert_select(
            RefreshToken, columns, source, {"prefix": REFRESH, "paired": PAIRED, "first": first, "last": last}
        )
    world.refresh = [first, last + 1]
    _analyze(RefreshToken)
    return first, last


def seed_events(count: int, *, start: int = 0, chunk: int = 250_000, deadline: float | None = None) -> int:
    """Append up to ``count`` audit events of SEEDED_EVENT_TYPE (numbered from ``start`` + 1), in
    chunks; stop at ``deadline`` (time.monotonic()) between chunks. Returns how many were written."""
    written = 0
    columns = {
        # Spread over the last 20 days: the current monthly partitions, as a live trail is.
        "occurred": "now() - (i %% 1728000) * interval '1 second'",
        "event_type": "%(event_type)s",
        "outcome": "CASE WHEN i %% 10 = 0 THEN 'deny' ELSE 'allow' END",
        "reason": "CASE WHEN i %% 10 = 0 THEN 'scope_missing' ELSE 'ok' END",
        "actor_username": "''",
        "human_id": "1 + i %% 1000",
        "human_username": "'human-' || (i %% 1000)",
        "agent_client_id": "'agent-' || (i %% 100)",
        "agent_name": "'Agent ' || (i %% 100)",
        "actors": "jsonb_build_array(jsonb_build_object('type', 'agent', 'id', 'agent-' || (i %% 100)))",
        "server_name": "'server-' || (i %% 10)",
        "server_resource": "'https://server-' || (i %% 10) || '.example.com/mcp'",
        "tool": "'tool-' || (i %% 40)",
        "action": "CASE WHEN i %% 3 = 0 THEN 'write' ELSE 'read' END",
        "delegation_id": "i %% 5000",
        "token_id": "i",
        "token_checksum": "encode(sha256(int8send(i)), 'hex')",
        "client_ip": "'10.0.0.1'::inet",
        "user_agent": "'mcp-server/1.0'",
        "correlation_id": "md5(i::text)",
        "detail": "'{}'::jsonb",
    }
    while written < count:
        if deadline is not None and written and time.monotonic() > deadline:
            break
        n = min(chunk, count - written)
        with transaction.atomic():
            _insert_select(
                AuditEvent,
                columns,
                "generate_series(%(first)s, %(last)s) AS i",
                {"event_type": SEEDED_EVENT_TYPE, "first": start + written + 1, "last": start + written + n},
            )
        written += n
    _analyze(AuditEvent)
    return written


def _checksums(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{n}".encode()).hexdigest() for n in range(1, count + 1)]


def _analyze(model: type[models.Model]) -> None:
    # Planner statistics as autovacuum would have them on a table that grew this way.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {model._meta.db_table}")
