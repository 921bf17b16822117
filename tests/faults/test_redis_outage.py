"""Redis stops under load: introspection keeps answering from PostgreSQL, a token revoked before,
during or after the outage is never "active" again, and Redis coming back with the keys it held
(cached answers included) brings no stale answer."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.faults.load import Load, introspect, revoke

pytestmark = pytest.mark.timeout(300)


def revoke_delegation(stack, delegation_id: str) -> None:
    """The console's own revocation (every admin and "My agents" door calls it), in another process."""
    stack.manage(
        "shell",
        "-c",
        "from policies.models import Delegation; from policies.revocation import revoke_delegation; "
        f"revoke_delegation(Delegation.objects.get(pk={int(delegation_id)}), by=None)",
    )


def test_redis_stopped_during_load_introspection_answers_from_postgres_and_never_revives_a_revoked_token(
    stack, figures
):
    seeded = stack.seeded
    seed = dataclasses.replace(seeded, tokens=seeded.tokens[:12])
    revoked_while_up, revoked_while_down = seed.tokens[:2], seed.tokens[2:4]
    (delegation_while_down, delegation_tokens), *_ = seeded.delegation_tokens.items()
    tokens = seed.tokens + delegation_tokens
    revoked_at: dict[str, float] = {}  # token -> when its revocation had been answered

    def revoke_by_agent(token: str) -> None:
        assert revoke(stack.console.url, seed, token) == 200
        revoked_at[token] = time.monotonic()

    with Load(stack.console.url, seed, prefix="redis-outage", clients=3, tokens=tokens) as load:
        load.wait(40)  # every token introspected a few times: whatever a cache holds, it holds them
        revoke_by_agent(revoked_while_up[0])
        load.wait(20)
        keys_before_outage = stack.redis.keys()
        stack.redis.stop()
        down_at = time.monotonic()
        load.wait(20)
        for token in revoked_while_down:
            revoke_by_agent(token)
        revoke_delegation(stack, delegation_while_down)
        revoked_at.update(dict.fromkeys(delegation_tokens, time.monotonic()))
        load.wait(30)
        stack.redis.start()
        up_at = time.monotonic()
        keys_after_restart = stack.redis.keys()
        load.wait(30)
        revoke_by_agent(revoked_while_up[1])
        load.wait(30)

    # Each revoked token, asked once more now that Redis is back with its old keys.
    after = [
        introspect(stack.console.url, seed, token, f"redis-outage-after-{n}")
        for n, token in enumerate(revoked_at)
    ]
    calls = load.calls + after
    assert {c.status for c in calls} == {200}, load.by_status()
    during = [c for c in load.calls if down_at < c.started and c.ended < up_at]
    assert len(during) >= 20, "too few calls met the outage"
    revived = [
        c.request_id for c in calls if c.token in revoked_at and c.started > revoked_at[c.token] and c.active
    ]
    assert revived == [], f"revoked tokens answered active: {revived[:10]}"
    live = [c for c in calls if c.token not in revoked_at]
    assert all(c.active for c in live)
    events = stack.events_with_correlation_prefix("redis-outage-")
    lost = [c.request_id for c in calls if events.get(c.request_id) != 1]
    assert lost == [], f"calls without exactly one audit event: {lost[:10]}"

    figures["redis_outage"] = {
        "requests": len(calls),
        "requests_during_outage": len(during),
        "errors": len([c for c in calls if c.status != 200]),
        "faults_injected": 1,
        "revocations": len(revoked_at),
        "revoked_answered_active": len(revived),
        "events_lost": len(lost),
        "redis_keys_before_outage": keys_before_outage,
        "redis_keys_after_restart": keys_after_restart,
        "outage_seconds": round(up_at - down_at, 2),
    }
