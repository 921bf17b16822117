"""The one recording entry point: every door records what happened through ``record``.

Introspection records an event on every call, so the write is one INSERT statement built once
per process from the model's fields (the ORM's save costs more than the round trip itself). It
stays a PostgreSQL write inside the request: an event is never held where a dying worker or
Redis could lose it.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from django.db import connections, router
from django.db.models import Field
from django.http import HttpRequest

from audit.middleware import current, metadata_of
from audit.models import AuditEvent


def record(
    event_type: str,
    *,
    outcome: str,
    reason: str = "",
    actor=None,
    human=None,
    agent=None,
    actors: list[dict[str, str]] | None = None,
    server=None,
    tool: str = "",
    action: str = "",
    delegation=None,
    token=None,
    request: HttpRequest | None = None,
    detail: dict[str, Any] | None = None,
    correlation_id: str = "",
    token_checksum: str = "",
    unless_recorded_since: tuple[str, datetime] | None = None,
    durable: bool = True,
) -> AuditEvent | None:
    """Append one audit event. Objects are copied into plain columns so the trail outlives them.

    ``actors`` is the chain of actors, outermost first; it defaults to the agent alone. ``token``
    is an access or refresh token: only its id and checksum are kept; ``token_checksum`` alone
    links an event to a token whose row is gone. Request metadata comes from
    ``request``, else from the request being served (audit.middleware), so events of one request
    share a correlation id; ``correlation_id`` overrides it (e.g. an id an MCP server reported).

    ``unless_recorded_since=(event_type, when)``: record nothing and return None if an event of
    that type occurred at or after ``when``, checked in the same statement as the insert (the
    introspection cache uses it to refuse answers older than a failed invalidation).

    ``durable=False`` (introspection's hot path with ``AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT`` off):
    outside a transaction, the insert's own commit does not wait for the WAL flush
    (``synchronous_commit = off`` for that statement's transaction only, set in the statement).
    Inside a transaction it is durable as usual: the setting would reach the other writes.
    """
    event = AuditEvent(
        event_type=event_type,
        outcome=outcome,
        reason=reason,
        tool=tool,
        action=action,
        detail=detail or {},
        token_checksum=token_checksum,
    )
    if actor is not None:
        event.actor_id, event.actor_username = actor.pk, actor.get_username()
    if human is not None:
        event.human_id, event.human_username = human.pk, human.get_username()
    if agent is not None:
        event.agent_client_id, event.agent_name = agent.client_id, agent.name
    if actors is not None:
        event.actors = actors
    elif agent is not None:
        event.actors = [{"type": "agent", "id": agent.client_id}]
    if server is not None:
        event.server_name, event.server_resource = server.name, server.resource
    if delegation is not None:
        event.delegation_id = delegation.pk
    if token is not None:
        event.token_id, event.token_checksum = token.pk, token.token_checksum or ""
    metadata = metadata_of(request) if request is not None else current.get()
    if metadata is not None:
        event.client_ip, event.user_agent = metadata.client_ip, metadata.user_agent
        event.correlation_id = metadata.correlation_id
    if correlation_id:
        event.correlation_id = correlation_id[:64]
    return event if _insert(event, unless_recorded_since, durable) else None


@cache
def _columns() -> tuple[Field, ...]:
    return tuple(field for field in AuditEvent._meta.concrete_fields if field is not AuditEvent._meta.pk)


@cache
def _insert_sql(vendor: str, conditional: bool, relaxed: bool) -> str:
    """INSERT of every column but the id; with ``conditional``, only if no event of a type since
    a time; with ``relaxed``, committed without waiting for the WAL flush (PostgreSQL)."""
    # Built from the model's own names, never from input.
    table = AuditEvent._meta.db_table
    names = ", ".join(f'"{field.column}"' for field in _columns())
    if not conditional and not relaxed:
        values = ", ".join(["%s"] * len(_columns()))
        return f'INSERT INTO "{table}" ({names}) VALUES ({values}) RETURNING "id"'  # noqa: S608
    # A SELECT has no target types to infer its parameters from: on PostgreSQL each says its
    # column's type (SQLite, for `make run`, takes them as they come).
    connection = connections[router.db_for_write(AuditEvent)]
    placeholder = "CAST(%s AS {})" if vendor == "postgresql" else "%s"
    values = ", ".join(placeholder.format(field.db_type(connection)) for field in _columns())
    # set_config(..., true) lasts until the end of the transaction: in autocommit, this
    # statement's own. Read from FROM, so it runs before the row is written (and the commit).
    source = " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed" if relaxed else ""
    since = f'SELECT 1 FROM "{table}" WHERE "event_type" = %s AND "occurred" >= %s'  # noqa: S608
    where = f" WHERE NOT EXISTS ({since})" if conditional else ""
    return f'INSERT INTO "{table}" ({names}) SELECT {values}{source}{where} RETURNING "id"'


def _insert(event: AuditEvent, unless_recorded_since: tuple[str, datetime] | None, durable: bool) -> bool:
    """Save ``event`` in one statement, as the ORM would (field defaults, auto_now_add, adapters)."""
    connection = connections[router.db_for_write(AuditEvent)]
    params = [field.get_db_prep_save(field.pre_save(event, add=True), connection) for field in _columns()]
    if unless_recorded_since is not None:
        params.extend(unless_recorded_since)
    relaxed = not durable and connection.vendor == "postgresql" and not connection.in_atomic_block
    sql = _insert_sql(connection.vendor, unless_recorded_since is not None, relaxed)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk = row[0]
    event._state.adding, event._state.db = False, connection.alias
    return True
