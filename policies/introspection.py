"""
Introspection answers from a cache every worker shares (Redis), with each revocation visible
on the very next call, on any worker.

An answer (one token, one MCP server, one tool call) is stored with the *generations* it was
decided under, and served only while both are current:

- the console generation, renewed by every change to what ``decide()`` reads for a token: the
  models in ``INVALIDATING_MODELS`` (signals), and ``introspection_changed()`` where a bulk
  ``.update()`` skips signals;
- the token's own generation, renewed when the token is changed or deleted (RFC 7009
  revocation, refresh rotation, revocation of what it hangs off), so that token churn leaves
  every other answer cached.

Generations are random values, not counters: one that Redis evicts or loses reads as missing
and matches no stored answer. A miss reads them *before* reading PostgreSQL and stores its
answer under what it read, so a revocation that commits meanwhile voids it. A transaction's
changes are renewed together once it commits (one pipeline; a new console generation makes
token ones needless), and before the same connection reads the cache inside it. Each new
connection to Redis renews the console generation: a Redis restarted from an older snapshot,
or a promoted replica, holds generations from before acknowledged renewals.

Expiry is kept with the answer: a token or delegation past its time is inactive from the cache.

Redis unreachable: introspection answers from PostgreSQL. A renewal that fails once the change
is committed records an ``introspection.cache_distrusted`` audit event, and an answer from the
cache is recorded with ``record(unless_recorded_since=...)`` that event, in one statement: once
Redis is back, no answer stored before such a revocation is served (PostgreSQL answers instead).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import django_redis.pool
from django.apps import apps
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.http import HttpRequest
from django.utils import timezone

from audit.events import record
from audit.models import AuditEvent
from policies import services  # a module: services' revocation calls introspection_changed()
from policies.decisions import Reason, decide
from policies.models import AccessToken, Delegation, McpServer
from policies.oauth.server_auth import authenticate_server
from policies.tokens import access_token_by_value, act_claim, token_actors, token_checksum

log = logging.getLogger(__name__)

# Everything decide() and the answer read for a token, but the token itself: any save or delete
# of these models, or change of their many-to-many fields, renews the console generation. A model
# that decide() comes to read goes here; code that changes one with a bulk .update() (which sends
# no signal) calls introspection_changed() after it.
INVALIDATING_MODELS = [
    "policies.Agent",
    "policies.McpServer",
    "policies.Delegation",
    "policies.DelegationPolicy",
    "policies.ExchangePolicy",  # token exchange: a hop and its scopes (policies.exchange)
    "policies.Tool",
    "policies.ToolAction",
    settings.AUTH_USER_MODEL,
    "auth.Group",
]
# Saves that change nothing decide() reads (a login stamps last_login).
HARMLESS_UPDATES = {settings.AUTH_USER_MODEL: {"last_login"}}
# Rows whose creation changes no cached answer, so that anonymous requests (a DCR registration,
# an end user's consent) do not void every answer. A cached answer names one token, its agent,
# delegation, human and MCP server, all older than the answer, and decide() reads them through
# the token; it never asks "is there any agent, delegation, server, human or group such that".
# - Agent: no token of a new agent exists; policies name agents through their m2m (renews).
# - Delegation: no token points to a new one yet (approval moves tokens with .update() and
#   introspection_changed(); the delegation it supersedes is ended by end_delegations(), which
#   renews).
# - McpServer: answers are kept per server client id, stored only once the server exists.
# - User, Group: a new human or group has no groups, policies or delegations yet; adding them is
#   an m2m change or a DelegationPolicy save, which renew.
# Not here: Tool and ToolAction (an answer "unknown_tool" for a tool call names one that may
# come to exist), DelegationPolicy (can widen what a human may delegate), ExchangePolicy (a
# hop that allows a chain).
HARMLESS_CREATIONS = {
    "policies.Agent",
    "policies.Delegation",
    "policies.McpServer",
    settings.AUTH_USER_MODEL,
    "auth.Group",
}

CACHE_ALIAS = "introspection"
# The version changes with the shape of what is stored, so that a deploy never reads older entries.
PREFIX = "introspection:v1:"
CONSOLE_GENERATION = PREFIX + "generation"
DISTRUSTED = "introspection.cache_distrusted"
# How far apart the web nodes' clocks may be: answers decided up to this long after a distrust
# event are refused too (one node stamps the event, another the answer).
CLOCK_SKEW = timedelta(seconds=5)

# Why decide() refuses one tool call of a token that is otherwise usable at the server.
TOOL_CALL_REFUSALS = (Reason.SCOPE_MISSING, Reason.UNKNOWN_TOOL)


@dataclass(frozen=True)
class Seen:
    """What an audit event copies from a human, agent, delegation or token (the attributes
    ``record`` reads), kept in a cached answer so that a hit records without reading PostgreSQL."""

    pk: int | None = None
    username: str = ""
    client_id: str = ""
    name: str = ""
    token_checksum: str = ""

    def get_username(self) -> str:
        return self.username


@dataclass(frozen=True)
class Keys:
    server: str
    token: str
    answer: str

    @classmethod
    def of(cls, server_client_id: str, checksum: str, tool_call: str | None) -> Keys:
        return cls(
            f"{PREFIX}server:{server_client_id}",
            f"{PREFIX}token:{checksum}",
            # The client id last: it may hold any character, a tool call never more than one ":".
            f"{PREFIX}answer:{checksum}:{tool_call or ''}:{server_client_id}",
        )


def introspect(
    request: HttpRequest, credentials: tuple[str, str], raw_token: str, tool: str, action: str
) -> dict[str, Any] | None:
    """The RFC 7662 answer for ``raw_token`` to the MCP server with ``credentials``, recorded as
    an audit event; None if the credentials are wrong."""
    checksum = token_checksum(raw_token)
    keys = Keys.of(credentials[0], checksum, f"{tool}:{action}" if tool else None)
    found = _read([CONSOLE_GENERATION, keys.server, keys.token, keys.answer])
    if found is not None:
        body = _answer_from_cache(request, found, keys, credentials[1], tool, action)
        if body is not None:
            return body
    # A miss: the generations are read before PostgreSQL, so a change committing meanwhile voids it.
    generations = _generations(found, keys.token) if found is not None else None
    decided_at = timezone.now()
    server = authenticate_server(request)
    if server is None:
        return None
    body, answer = _decide(request, server, raw_token, tool, action)
    if generations is not None and answer is not None:
        answer.update(generations=generations, decided_at=decided_at)
        server_entry = {
            "generation": generations[0],
            "decided_at": decided_at,
            "fields": {f.attname: getattr(server, f.attname) for f in McpServer._meta.concrete_fields},
        }
        _write({keys.server: server_entry, keys.answer: answer})
    return body


def _decide(
    request: HttpRequest, server: McpServer, raw_token: str, tool: str, action: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The answer from PostgreSQL, recorded; with what a cache hit needs to give it again."""
    tool_call = f"{tool}:{action}" if tool else None
    token = access_token_by_value(raw_token)
    if token is None or token.application is None:
        # Not cached: a token that does not exist yet could be minted with this value.
        record(
            "introspection",
            outcome="deny",
            reason="unknown_token",
            server=server,
            tool=tool,
            action=action,
            request=request,
        )
        return {"active": False}, None
    agent = token.application
    decision = decide(agent=agent, server=server, token=token, tool_call=tool_call)
    delegation = token.delegation
    # No delegation: the console's discovery token, minted for the admin importing tools.
    human = delegation.human if delegation else token.user
    # A token denied only for this tool call is still a live token (so an MCP server answers
    # 403 insufficient_scope, not 401): one with usable scopes, or a discovery token.
    active = decision.allowed or (tool_call is not None and decision.reason in TOOL_CALL_REFUSALS)
    seen = {
        "human": Seen(pk=human.pk, username=human.get_username()) if human is not None else None,
        "agent": Seen(client_id=agent.client_id, name=agent.name),
        "actors": token_actors(token),
        "delegation": Seen(pk=delegation.pk) if delegation is not None else None,
        "token": Seen(pk=token.pk, token_checksum=token.token_checksum or ""),
    }
    _record(request, server, tool, action, decision.allowed, decision.reason, seen)
    answer = {"allowed": decision.allowed, "reason": decision.reason, "seen": seen, "active": active}
    if not active:
        return {"active": False}, answer
    noted = timezone.now()
    if delegation is not None:
        if delegation.last_used is not None and delegation.last_used >= noted - services.LAST_USED_RESOLUTION:
            noted = delegation.last_used
        services.note_delegation_used(delegation)
    body = {
        "active": True,
        "scope": " ".join(sorted(decision.scopes)),
        "client_id": agent.client_id,
        "sub": str(human.pk),
        "username": human.get_username(),
        "aud": server.resource,
        "iss": settings.ISSUER,
        "exp": int(token.expires.timestamp()),
        "iat": int(token.created.timestamp()),
        "token_type": "Bearer",
        "act": act_claim(token),
    }
    if tool_call:
        body["decision"] = {
            "tool": tool,
            "action": action,
            "allowed": decision.allowed,
            "reason": decision.reason,
        }
    # Until the token, its delegation or anything up its exchange chain runs out (decide() says).
    answer.update(body=body, until=decision.valid_until, noted=noted)
    return body, answer


def _answer_from_cache(
    request: HttpRequest, found: dict[str, Any], keys: Keys, secret: str, tool: str, action: str
) -> dict[str, Any] | None:
    """The cached answer, recorded; None if there is none still valid (the miss path answers)."""
    generation, server_entry, answer = (found.get(k) for k in (CONSOLE_GENERATION, keys.server, keys.answer))
    if generation is None or server_entry is None or answer is None:
        return None
    current = (generation, found.get(keys.token))
    if server_entry["generation"] != generation or answer["generations"] != current:
        return None
    server = McpServer(**server_entry["fields"])
    if not server.check_secret(secret):
        return None  # PostgreSQL answers: 401, or credentials rotated since this was stored
    allowed, reason, active = answer["allowed"], answer["reason"], answer["active"]
    now = timezone.now()
    if active and answer["until"] <= now:
        allowed, reason, active = False, Reason.EXPIRED, False
    since = min(server_entry["decided_at"], answer["decided_at"]) - CLOCK_SKEW
    if _record(request, server, tool, action, allowed, reason, answer["seen"], since) is None:
        return None  # a revocation could not reach the cache since this answer was decided
    if not active:
        return {"active": False}
    delegation = answer["seen"]["delegation"]
    if delegation is not None and answer["noted"] <= now - services.LAST_USED_RESOLUTION:
        services.note_delegation_used(Delegation(pk=delegation.pk))
        _write({keys.answer: {**answer, "noted": now}})
    return answer["body"]


def _record(
    request: HttpRequest,
    server: McpServer,
    tool: str,
    action: str,
    allowed: bool,
    reason: str,
    seen: dict[str, Any],
    unless_distrusted_since: datetime | None = None,
) -> AuditEvent | None:
    return record(
        "tool_call.decision" if tool else "introspection",
        outcome="allow" if allowed else "deny",
        reason=reason,
        human=seen["human"],
        agent=seen["agent"],
        actors=seen["actors"],
        server=server,
        tool=tool,
        action=action,
        delegation=seen["delegation"],
        token=seen["token"],
        request=request,
        unless_recorded_since=(DISTRUSTED, unless_distrusted_since) if unless_distrusted_since else None,
        durable=settings.AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT,
    )


# --- Generations ---------------------------------------------------------------------------------


def _new_generation() -> str:
    return secrets.token_hex(8)


def _generations(found: dict[str, Any], token_key: str) -> tuple[str, str] | None:
    """The console's and the token's generations, created where missing; None if unreachable."""
    keys = [CONSOLE_GENERATION, token_key]
    current = {key: found.get(key) for key in keys}
    missing = [key for key, value in current.items() if value is None]
    if missing:
        try:
            cache = caches[CACHE_ALIAS]
            for key in missing:
                cache.add(key, _new_generation(), timeout=_timeout(key))
            current.update(cache.get_many(missing))
        except Exception as error:  # noqa: BLE001  (django-redis raises its own and redis-py's)
            _unreachable("create a generation", error)
            return None
    if any(current[key] is None for key in keys):
        return None  # a cache that keeps nothing (DummyCache): nothing to store under
    return current[CONSOLE_GENERATION], current[token_key]


def _timeout(key: str) -> int | None:
    # The console generation outlives every answer; a token's may expire with them, as a
    # generation that is gone matches no stored answer.
    return None if key == CONSOLE_GENERATION else settings.INTROSPECTION_CACHE_SECONDS


def introspection_changed() -> None:
    """Something decide() reads changed (without a signal, e.g. a bulk ``.update()``): every
    cached answer is void once the current transaction commits (at once outside one)."""
    _renew({CONSOLE_GENERATION})


def token_changed(checksum: str) -> None:
    """An access token changed or was deleted: its cached answers are void."""
    _renew({f"{PREFIX}token:{checksum}"})


class _Pending:
    """The generations one transaction's changes renew, written together: once on commit (one
    pipeline, one distrust event if it fails), and before a read of the cache on the same
    connection inside the transaction (the only reader that sees the uncommitted rows; a worker
    that decides from the old rows meanwhile stores under what the commit then renews)."""

    def __init__(self) -> None:
        # Django's list of on-commit hooks: a new list once the transaction commits or a
        # savepoint rolls back, which ends this collection.
        self.hooks = connection.run_on_commit
        self.keys: set[str] = set()
        self.unwritten: set[str] = set()
        self.done = False

    def commit(self) -> None:
        if not self.done:  # one hook per change (each survives its own savepoint), one write
            self.done = True
            _write_generations(self.keys, committed=True)


_pending = threading.local()


def _current_pending() -> _Pending | None:
    pending = getattr(_pending, "value", None)
    if pending is None or pending.done or pending.hooks is not connection.run_on_commit:
        return None
    return pending


def _renew(keys: set[str]) -> None:
    if not connection.in_atomic_block:
        _write_generations(keys, committed=True)
        return
    pending = _current_pending()
    if pending is None:
        pending = _pending.value = _Pending()
    pending.keys |= keys
    pending.unwritten |= keys
    transaction.on_commit(pending.commit)


def _write_uncommitted() -> None:
    """Before this connection reads the cache inside a transaction that changed something."""
    pending = _current_pending() if connection.in_atomic_block else None
    if pending is not None and pending.unwritten:
        keys, pending.unwritten = pending.unwritten, set()
        _write_generations(keys, committed=False)


def _write_generations(keys: set[str], *, committed: bool) -> None:
    # A new console generation voids every answer: the token keys need no renewal beside it.
    # Token generations expire with the answers they guard (a missing one matches none).
    if CONSOLE_GENERATION in keys:
        entries, timeout = {CONSOLE_GENERATION: _new_generation()}, None
    else:
        entries, timeout = {key: _new_generation() for key in keys}, settings.INTROSPECTION_CACHE_SECONDS
    try:
        caches[CACHE_ALIAS].set_many(entries, timeout=timeout)
        return
    except Exception as error:  # noqa: BLE001
        _unreachable("renew a generation", error)
    if committed:
        # The cache may still hold answers this change voids: PostgreSQL says not to trust them.
        try:
            record(DISTRUSTED, outcome="error", reason="cache_unreachable")
        except Exception:
            log.exception("introspection cache: could not record %s", DISTRUSTED)


def renew_on_connect(redis_connection: Any) -> None:
    """redis-py's connect hook for the introspection cache: a new console generation before a
    new connection's first command. Redis restarted from an older snapshot, or a replica
    promoted, holds generations from before acknowledged renewals, and nothing else marks its
    answers stale; any such Redis is reached through a new connection, so none of them is
    served. A Redis that refuses the write (a read-only replica) is not used."""
    redis_connection.on_connect()
    cache = caches[CACHE_ALIAS]
    redis_connection.send_command(
        "SET", cache.make_key(CONSOLE_GENERATION), cache.client.encode(_new_generation())
    )
    redis_connection.read_response()


class ConnectionFactory(django_redis.pool.ConnectionFactory):
    """django-redis connections for the introspection cache: its own pool (django-redis shares
    one per URL, so the rate limiter's would otherwise serve it, without the hook or the short
    timeouts), each connection renewing the console generation (``renew_on_connect``)."""

    _pools: dict[str, Any] = {}

    def get_connection_pool(self, params: dict[str, Any]) -> Any:
        return super().get_connection_pool({**params, "redis_connect_func": renew_on_connect})


# --- Cache access (Redis may be down: the answer then comes from PostgreSQL) ---------------------


def _read(keys: list[str]) -> dict[str, Any] | None:
    _write_uncommitted()
    try:
        return caches[CACHE_ALIAS].get_many(keys)
    except Exception as error:  # noqa: BLE001
        _unreachable("read", error)
        return None


def _write(entries: dict[str, Any]) -> None:
    try:
        caches[CACHE_ALIAS].set_many(entries, timeout=settings.INTROSPECTION_CACHE_SECONDS)
    except Exception as error:  # noqa: BLE001
        _unreachable("write", error)


def _unreachable(operation: str, error: Exception) -> None:
    # The error names the cache's address, never a key (keys hold token checksums).
    log.warning("introspection cache unreachable (%s): %s: %s", operation, type(error).__name__, error)


# --- Signals -------------------------------------------------------------------------------------


def _model_changed(sender, instance=None, update_fields=None, created=False, **kwargs) -> None:
    if created and sender._meta.label in HARMLESS_CREATIONS:
        return
    harmless = HARMLESS_UPDATES.get(sender._meta.label, set())
    if update_fields and set(update_fields) <= harmless:
        return
    introspection_changed()


def _many_to_many_changed(sender, action: str, **kwargs) -> None:
    if action.startswith("post_"):
        introspection_changed()


def _token_saved(sender, instance: AccessToken, created: bool, update_fields=None, **kwargs) -> None:
    if created:
        return  # unknown values are never cached
    if update_fields and not {"token", "token_checksum"} & set(update_fields):
        token_changed(instance.token_checksum)
    else:
        introspection_changed()  # its value may have changed: the old one's answers are void too


def _token_deleted(sender, instance: AccessToken, **kwargs) -> None:
    token_changed(instance.token_checksum)


def connect_signals() -> None:
    """Called once from PoliciesConfig.ready()."""
    for label in INVALIDATING_MODELS:
        model = apps.get_model(label)
        uid = f"introspection:{label}"
        post_save.connect(_model_changed, sender=model, dispatch_uid=uid)
        post_delete.connect(_model_changed, sender=model, dispatch_uid=uid)
        for field in model._meta.many_to_many:
            m2m_changed.connect(_many_to_many_changed, sender=field.remote_field.through, dispatch_uid=uid)
    post_save.connect(_token_saved, sender=AccessToken, dispatch_uid="introspection:token")
    post_delete.connect(_token_deleted, sender=AccessToken, dispatch_uid="introspection:token")
