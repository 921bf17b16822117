"""PostgreSQL restarts under load, cleanly (``pg_ctl -m fast``) and as a crash (``-m immediate``: no
shutdown checkpoint, recovery from WAL): the console answers 503s while it is gone, recovers by
itself, and every introspection it acknowledged (200) has its audit event afterwards.

Over the crash that holds because the audit INSERT commits synchronously before the answer is sent
(``synchronous_commit`` on, PostgreSQL's default, which the stack keeps): what this proves is
"acknowledged means committed and durable", not more.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.faults.load import Load, get, post
from tests.faults.stack import wait_until

pytestmark = pytest.mark.timeout(300)


def assert_clean_503(status: int, headers: dict, body, *, json_error: bool) -> None:
    assert status == 503, (status, body)
    assert int(headers["Retry-After"]) > 0
    if json_error:
        assert body["error"] == "temporarily_unavailable", body
        assert body["error_description"]
        assert headers["Cache-Control"] == "no-store"
    else:
        assert headers["Content-Type"].startswith("text/plain"), headers
        assert "Traceback" not in body and "temporarily unavailable" in body


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_during_load_gives_503s_then_recovers_and_loses_no_acknowledged_audit_event(
    stack, figures, mode
):
    seed = dataclasses.replace(stack.seeded, tokens=stack.seeded.tokens[12:24])
    url = stack.console.url
    prefix = f"pg-restart-{mode}"
    with Load(url, seed, prefix=prefix, clients=3) as load:
        load.wait(30)
        stack.pg.stop(mode)
        down_at = time.monotonic()
        load.wait(30)
        # Other doors while the database is gone: the token endpoint (OAuth JSON) and a console
        # page whose session must be loaded from the database (a plain page).
        token_answer = post(url + "/oauth/token/", {"grant_type": "refresh_token", "refresh_token": "x"}, {})
        page_answer = get(url + "/admin/", {"Cookie": "sessionid=0123456789abcdefghijklmnopqrstuv"})
        stack.pg.start()
        up_at = time.monotonic()
        first_ok = wait_until(
            lambda: next((c for c in load.calls if c.status == 200 and c.started > up_at), None),
            120,
            "an introspection to succeed after PostgreSQL came back",
        )
        load.wait(30)

    assert_clean_503(*token_answer, json_error=True)
    assert_clean_503(*page_answer, json_error=False)
    refused = [c for c in load.calls if c.status != 200]
    assert refused, "no call met the outage: the fault was not injected"
    for call in refused:
        assert_clean_503(call.status, call.headers, call.body, json_error=True)
        assert call.headers["X-Request-ID"] == call.request_id
    answered = [c for c in load.calls if c.status == 200]
    assert all(c.active for c in answered)
    events = stack.events_with_correlation_prefix(prefix + "-")
    lost = [c.request_id for c in answered if events.get(c.request_id) != 1]
    assert lost == [], f"acknowledged introspections without exactly one audit event: {lost[:10]}"

    figures[f"postgres_restart_{mode}"] = {
        "requests": len(load.calls),
        "acknowledged": len(answered),
        "refused_503": len(refused),
        "other_errors": len([c for c in refused if c.status != 503]),
        "faults_injected": 1,
        "events_lost": len(lost),
        "recovery_seconds": round(first_ok.ended - up_at, 2),
        "outage_seconds": round(up_at - down_at, 2),
    }
