"""The introspection cache (policies.introspection): answers that every worker shares through
Redis, with each revocation visible on the very next call, on any worker, and with Redis down."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from audit.events import record
from audit.models import AuditEvent
from policies import introspection
from policies.models import Agent, Delegation, DelegationPolicy, McpServer, ToolAction
from policies.services import (
    revoke_delegation,
    revoke_human_delegations,
    revoke_server_delegations,
    set_agent_status,
)
from tests.conftest import FORM, form, introspect

TOOL = {"tool": "list_events", "action": "read"}


def statements_during(call) -> list[str]:
    """The SQL run by ``call`` (a request empties connection.queries, so count with a wrapper)."""
    seen = []

    def count(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        call()
    return seen


def is_active(server, token: str) -> bool:
    response = introspect(server, token, **TOOL)
    assert response.status_code in (200, 401), response.content
    return response.status_code == 200 and response.json()["active"]


@pytest.fixture
def two_workers(settings, monkeypatch):
    """Two cache connections to the same Redis, as two web workers hold: ``use(1)`` or ``use(2)``."""
    settings.CACHES = {**settings.CACHES, "introspection_2": dict(settings.CACHES["introspection"])}

    def use(worker: int) -> None:
        monkeypatch.setattr(
            introspection, "CACHE_ALIAS", "introspection" if worker == 1 else "introspection_2"
        )

    use(1)
    return use


@pytest.fixture
def live(oauth, calendar) -> dict:
    return oauth.tokens(calendar.resource, "list_events:read")


def _revoke_by_rfc7009(oauth, calendar, tokens):
    response = oauth.client.post(
        "/oauth/revoke/",
        form({"token": tokens["access_token"], "client_id": oauth.agent.client_id}),
        FORM,
    )
    assert response.status_code == 200


def _deactivate_server(oauth, calendar, tokens):
    server = McpServer.objects.get(pk=calendar.server.pk)
    server.active = False
    server.save()


def _remove_scope_from_policy(oauth, calendar, tokens):
    read = ToolAction.objects.get(tool__server=calendar.server, tool__name="list_events", name="read")
    for policy in DelegationPolicy.objects.filter(may_delegate=read):
        policy.may_delegate.remove(read)


def _deactivate_human(oauth, calendar, tokens):
    human = User.objects.get(username="alice")
    human.is_active = False
    human.save()


def _rotate_refresh_token(oauth, calendar, tokens):
    assert oauth.refresh(tokens["refresh_token"]).status_code == 200


REVOCATIONS = {
    "token by RFC 7009": _revoke_by_rfc7009,
    "delegation": lambda oauth, calendar, tokens: revoke_delegation(Delegation.objects.get(), by=None),
    "agent suspended": lambda oauth, calendar, tokens: set_agent_status(
        oauth.agent, Agent.Status.SUSPENDED, by=None
    ),
    "human's delegations": lambda oauth, calendar, tokens: revoke_human_delegations(
        User.objects.get(username="alice"), by=None
    ),
    "human deactivated": _deactivate_human,
    "server deactivated": _deactivate_server,
    "server revoke-all": lambda oauth, calendar, tokens: revoke_server_delegations(calendar.server, by=None),
    "scope removed from the policy": _remove_scope_from_policy,
    "refresh rotation ends the old access token": _rotate_refresh_token,
}


@pytest.mark.parametrize("revoke", REVOCATIONS.values(), ids=REVOCATIONS.keys())
def test_a_revocation_is_seen_by_the_very_next_call_on_another_worker(
    revoke, oauth, calendar, live, two_workers, django_capture_on_commit_callbacks
):
    assert is_active(calendar, live["access_token"])  # decided, and cached, by worker 1
    served = statements_during(lambda: is_active(calendar, live["access_token"]))
    assert len(served) == 1 and served[0].startswith('INSERT INTO "audit_auditevent"')  # from the cache
    with django_capture_on_commit_callbacks(execute=True):
        revoke(oauth, calendar, live)
    two_workers(2)
    assert not is_active(calendar, live["access_token"])
    two_workers(1)
    assert not is_active(calendar, live["access_token"])


def test_a_revocation_committed_while_an_answer_is_being_decided_is_not_cached_as_active(
    oauth, calendar, live, monkeypatch, django_capture_on_commit_callbacks
):
    read_token = introspection.access_token_by_value

    def read_then_revoke(raw_token: str):
        token = read_token(raw_token)
        with django_capture_on_commit_callbacks(execute=True):
            set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)
        return token

    monkeypatch.setattr(introspection, "access_token_by_value", read_then_revoke)
    assert is_active(calendar, live["access_token"])  # decided from the rows read before the revocation
    monkeypatch.setattr(introspection, "access_token_by_value", read_token)
    assert not is_active(calendar, live["access_token"])


def test_a_cache_hit_reads_nothing_from_postgresql_and_still_records_its_audit_event(calendar, live):
    assert is_active(calendar, live["access_token"])
    before = AuditEvent.objects.filter(event_type="tool_call.decision").count()
    served = statements_during(lambda: is_active(calendar, live["access_token"]))
    assert [sql.split("(")[0].strip() for sql in served] == ['INSERT INTO "audit_auditevent"']
    event = AuditEvent.objects.filter(event_type="tool_call.decision").order_by("-id").first()
    assert AuditEvent.objects.filter(event_type="tool_call.decision").count() == before + 1
    assert (event.outcome, event.reason, event.human_username, event.server_name) == (
        "allow",
        "ok",
        "alice",
        "calendar",
    )
    assert (event.tool, event.action, event.token_checksum) == ("list_events", "read", live_checksum(live))
    assert event.actors == [{"type": "agent", "id": event.agent_client_id}]


def live_checksum(tokens: dict) -> str:
    return introspection.token_checksum(tokens["access_token"])


def test_an_expired_token_is_inactive_from_the_cache(calendar, live, monkeypatch):
    assert is_active(calendar, live["access_token"])
    later = timezone.now() + timedelta(hours=2)  # past the token's 15 minutes
    monkeypatch.setattr(timezone, "now", lambda: later)
    served = statements_during(lambda: introspect(calendar, live["access_token"], **TOOL))
    assert len(served) == 1 and served[0].startswith('INSERT INTO "audit_auditevent"')  # from the cache
    assert introspect(calendar, live["access_token"], **TOOL).json() == {"active": False}
    assert AuditEvent.objects.order_by("-id").values_list("outcome", "reason").first() == ("deny", "expired")


def test_wrong_server_credentials_are_refused_even_with_an_answer_cached(calendar, live):
    assert is_active(calendar, live["access_token"])
    calendar.client_secret = "not-the-secret"
    assert introspect(calendar, live["access_token"], **TOOL).status_code == 401


# --- Redis down --------------------------------------------------------------------------------


class ThrowawayRedis:
    """A redis-server of the test's own, on a free port, whose data survives a restart."""

    def __init__(self, directory):
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the throwaway redis-server did not start")

    def stop(self, *, keep_data: bool = False) -> None:
        if keep_data:
            redis.Redis.from_url(self.url).save()  # read back by the next start()
        self.process.terminate()
        self.process.wait()

    def keys(self) -> list[bytes]:
        return redis.Redis.from_url(self.url).keys(f"*{introspection.PREFIX}answer:*")


@pytest.fixture
def own_redis(tmp_path, settings):
    server = ThrowawayRedis(tmp_path)
    server.start()
    settings.CACHES = {
        **settings.CACHES,
        "introspection": {**settings.CACHES["introspection"], "LOCATION": server.url},
    }
    yield server
    if server.process.poll() is None:
        server.stop()


def test_with_redis_down_postgresql_answers_and_revocations_still_count(
    oauth, calendar, live, own_redis, django_capture_on_commit_callbacks
):
    assert is_active(calendar, live["access_token"])
    assert own_redis.keys()  # the answer is in this Redis
    own_redis.stop()
    assert is_active(calendar, live["access_token"])  # no 500: PostgreSQL answers
    with django_capture_on_commit_callbacks(execute=True):
        set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)
    assert not is_active(calendar, live["access_token"])


def test_answers_cached_before_a_revocation_made_while_redis_was_down_are_not_served_when_it_is_back(
    oauth, calendar, live, own_redis, django_capture_on_commit_callbacks
):
    assert is_active(calendar, live["access_token"])
    own_redis.stop(keep_data=True)
    with django_capture_on_commit_callbacks(execute=True):
        set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)  # the token row stays
    assert AuditEvent.objects.filter(event_type=introspection.DISTRUSTED).exists()
    own_redis.start()
    assert own_redis.keys()  # back with the "active" answer it held
    assert not is_active(calendar, live["access_token"])
    assert not is_active(calendar, live["access_token"])


@pytest.mark.django_db(transaction=True)
def test_an_answer_decided_on_another_worker_before_the_revocation_commits_is_void_after_it(
    oauth, calendar, live
):
    """The renewal at once is not enough: a worker that reads it before the commit still sees the
    old rows; the renewal on commit voids what that worker stored."""

    def other_worker() -> bool:
        try:
            return is_active(calendar, live["access_token"])
        finally:
            connection.close()  # this thread's own connection

    with transaction.atomic():
        set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(other_worker).result()  # not committed yet: still active there
    assert not is_active(calendar, live["access_token"])


def test_a_revocation_is_not_undone_by_redis_restarting_from_an_older_snapshot(
    oauth, calendar, live, own_redis, django_capture_on_commit_callbacks
):
    """A Redis that restarts from its last snapshot (RDB, or a replica promoted) holds the
    generations from before the revocation, and the renewal succeeded, so no distrust event
    guards the hit: each new connection renews the console generation instead."""
    assert is_active(calendar, live["access_token"])
    redis.Redis.from_url(own_redis.url).save()  # the periodic snapshot: holds the active answer
    with django_capture_on_commit_callbacks(execute=True):
        set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)  # renewal acknowledged
    assert not is_active(calendar, live["access_token"])
    assert not AuditEvent.objects.filter(event_type=introspection.DISTRUSTED).exists()
    own_redis.process.kill()  # a crash: no save at exit
    own_redis.process.wait()
    own_redis.start()  # loads the older dump.rdb
    assert own_redis.keys()  # back with the "active" answer it held
    assert not is_active(calendar, live["access_token"])


def test_a_changed_tokens_generation_expires_with_the_answers(
    oauth, calendar, live, own_redis, django_capture_on_commit_callbacks
):
    assert is_active(calendar, live["access_token"])
    with django_capture_on_commit_callbacks(execute=True):
        assert oauth.refresh(live["refresh_token"]).status_code == 200  # the old access token ends
    client = redis.Redis.from_url(own_redis.url)
    [key] = client.keys(f"*{introspection.PREFIX}token:{live_checksum(live)}")
    assert 0 < client.ttl(key) <= introspection.settings.INTROSPECTION_CACHE_SECONDS


def _tokens_of_one_delegation(oauth, calendar, count: int) -> None:
    for _ in range(count):
        oauth.tokens(calendar.resource, "list_events:read")
    assert Delegation.objects.get().access_tokens.count() == count


def test_revoking_a_delegation_with_many_tokens_renews_the_cache_once_on_commit(
    oauth, calendar, own_redis, django_capture_on_commit_callbacks, monkeypatch
):
    _tokens_of_one_delegation(oauth, calendar, 4)
    writes = []
    write = introspection._write_generations

    def counted(keys, *, committed):
        writes.append((set(keys), committed))
        write(keys, committed=committed)

    monkeypatch.setattr(introspection, "_write_generations", counted)
    with django_capture_on_commit_callbacks(execute=True):
        revoke_delegation(Delegation.objects.get(), by=None)
        assert writes == []  # nothing while the transaction holds its row locks
    assert len(writes) == 1 and writes[0][1] and introspection.CONSOLE_GENERATION in writes[0][0]


def test_revoking_many_tokens_with_redis_unreachable_records_one_distrust_event(
    oauth, calendar, settings, django_capture_on_commit_callbacks
):
    _tokens_of_one_delegation(oauth, calendar, 4)
    unreachable = {**settings.CACHES["introspection"], "LOCATION": "redis://127.0.0.1:9/0"}
    settings.CACHES = {**settings.CACHES, "introspection": unreachable}
    with django_capture_on_commit_callbacks(execute=True):
        revoke_delegation(Delegation.objects.get(), by=None)
    assert AuditEvent.objects.filter(event_type=introspection.DISTRUSTED).count() == 1


def test_a_change_inside_a_transaction_is_seen_by_a_read_later_in_that_transaction(oauth, calendar, live):
    """The one reader that sees uncommitted rows: the cache is renewed before it reads."""
    assert is_active(calendar, live["access_token"])
    with transaction.atomic():
        set_agent_status(oauth.agent, Agent.Status.SUSPENDED, by=None)
        assert not is_active(calendar, live["access_token"])


def test_an_anonymous_dcr_registration_leaves_the_cached_answers_served(calendar, live):
    assert is_active(calendar, live["access_token"])
    body = {
        "redirect_uris": ["http://127.0.0.1:40000/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "anyone",
    }
    response = Client(REMOTE_ADDR="192.0.2.7").post("/oauth/register/", json.dumps(body), "application/json")
    assert response.status_code == 201
    served = statements_during(lambda: is_active(calendar, live["access_token"]))
    assert len(served) == 1 and served[0].startswith('INSERT INTO "audit_auditevent"')  # from the cache


def test_a_new_tool_voids_answers_that_called_it_unknown(calendar, live):
    def decision() -> str:
        body = introspect(calendar, live["access_token"], tool="add_event", action="write").json()
        return body["decision"]["reason"]

    assert decision() == "unknown_tool"
    tool = calendar.server.tools.create(name="add_event")
    ToolAction.objects.create(tool=tool, name="write")
    assert decision() == "scope_missing"


def test_introspection_flush_voids_answers_after_a_change_that_sent_no_signal(oauth, calendar, live):
    assert is_active(calendar, live["access_token"])
    with connection.cursor() as cursor:  # as raw SQL or a data migration would
        sql = f"UPDATE {Agent._meta.db_table} SET status = %s WHERE id = %s"
        cursor.execute(sql, [Agent.Status.SUSPENDED, oauth.agent.pk])
    assert is_active(calendar, live["access_token"])  # the cache cannot know
    call_command("introspection_flush", stdout=io.StringIO())
    assert not is_active(calendar, live["access_token"])


def test_calls_with_one_token_through_the_whole_middleware_stack_decide_from_postgresql_once(
    calendar, live, monkeypatch
):
    # The rate limiter, sessions, audit middleware and the delegation's last_used note run on
    # every call: none of them may void the cached answer.
    decided = []
    decide_from_postgresql = introspection._decide
    monkeypatch.setattr(
        introspection, "_decide", lambda *args: decided.append(1) or decide_from_postgresql(*args)
    )
    for _ in range(20):
        assert is_active(calendar, live["access_token"])
    assert len(decided) == 1


def synchronous_commit_of_audit_inserts(call) -> tuple[dict[str, str], str]:
    """Event type -> the synchronous_commit its audit INSERT ran (and so committed) with, read in
    that statement (RETURNING); the row is handed back to the caller as if untouched. Also the
    session's own setting once ``call`` is done."""
    seen = {}

    def capture(execute, sql, params, many, context):
        if not sql.startswith('INSERT INTO "audit_auditevent"'):
            return execute(sql, params, many, context)
        sql = sql.replace('RETURNING "id"', "RETURNING \"id\", current_setting('synchronous_commit')")
        result = execute(sql, params, many, context)
        cursor = context["cursor"]
        seen[params[[f.column for f in AuditEvent._meta.concrete_fields][1:].index("event_type")]] = (
            cursor.fetchone()[1]
        )
        cursor.scroll(0, mode="absolute")
        return result

    # The session starts durable whatever the server's default (scripts/with-services' throwaway
    # PostgreSQL runs with synchronous_commit off, for speed).
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
    try:
        with connection.execute_wrapper(capture):
            call()
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            after = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")
    return seen, after


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("synchronous", [True, False])
def test_the_hot_path_setting_decides_whether_introspection_events_wait_for_the_wal_flush(
    oauth, calendar, live, settings, synchronous
):
    settings.AUDIT_HOT_PATH_SYNCHRONOUS_COMMIT = synchronous
    seen, session_after = synchronous_commit_of_audit_inserts(
        lambda: (
            is_active(calendar, live["access_token"]),  # a miss
            is_active(calendar, live["access_token"]),  # a hit
            introspect(calendar, live["access_token"]),  # no tool call: "introspection"
            record("agent.suspended", outcome="allow", agent=oauth.agent),  # any other, in autocommit
        )
    )
    hot = "on" if synchronous else "off"
    assert seen == {"tool_call.decision": hot, "introspection": hot, "agent.suspended": "on"}
    assert session_after == "on"  # set for that statement's transaction only
