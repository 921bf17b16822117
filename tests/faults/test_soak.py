"""A bounded soak: steady introspection load on gunicorn for SOAK_SECONDS (20 in `make test`, longer
with `make soak`): no errors, worker memory flat, one audit event per call.

Memory is each gunicorn worker's resident size (VmRSS) after a warm-up (imports, connections,
caches filled) and at the end. CPython rarely returns freed memory to the system and its allocator
fragments a little, so "flat" is stated with a tolerance: at most SOAK_RSS_TOLERANCE_MIB (default
4 MiB) of growth per worker. The smallest leak a run can catch is that tolerance divided by the
calls each worker served (reported as ``smallest_leak_caught_bytes_per_call``): a few KiB per call
in the short run, a few hundred bytes in `make soak`. The workers must be the same processes at
the end (none was restarted, which would hide a leak).
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from tests.faults.load import Load

pytestmark = pytest.mark.timeout(3600)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", 20))
TOLERANCE_KIB = int(float(os.environ.get("SOAK_RSS_TOLERANCE_MIB", 4)) * 1024)


def test_soak_steady_load_has_no_errors_flat_worker_memory_and_one_audit_event_per_call(stack, figures):
    seed = dataclasses.replace(stack.seeded, tokens=stack.seeded.tokens[24:])
    url = stack.console.url
    with Load(url, seed, prefix="soak-warmup", clients=3, limit=300) as warmup:
        warmup.join()
    assert warmup.by_status() == {200: 300}
    rss_start = stack.console.worker_rss_kib()

    with Load(url, seed, prefix="soak", clients=3) as load:
        time.sleep(SOAK_SECONDS)  # the length of the run, not a timing assertion
    rss_end = stack.console.worker_rss_kib()

    calls = load.calls
    errors = [c for c in calls if c.status != 200 or not c.active]
    events = stack.events_with_correlation_prefix("soak-")
    soak_events = {k: v for k, v in events.items() if not k.startswith("soak-warmup-")}
    growth = {pid: rss_end[pid] - rss_start[pid] for pid in rss_start if pid in rss_end}
    figures["soak"] = {
        "seconds": SOAK_SECONDS,
        "requests": len(calls),
        "errors": len(errors),
        "audit_events": sum(soak_events.values()),
        "events_lost": len([c for c in calls if soak_events.get(c.request_id) != 1]),
        "workers": len(rss_start),
        "rss_start_mib": {str(pid): round(kib / 1024, 1) for pid, kib in rss_start.items()},
        "rss_end_mib": {str(pid): round(kib / 1024, 1) for pid, kib in rss_end.items()},
        "max_growth_mib": round(max(growth.values()) / 1024, 2),
        "tolerance_mib": TOLERANCE_KIB / 1024,
        "smallest_leak_caught_bytes_per_call": round(
            TOLERANCE_KIB * 1024 / max(1, len(calls) / len(rss_start))
        ),
    }

    assert len(calls) > 100, "the soak made too few calls to mean anything"
    assert errors == []
    assert sorted(rss_end) == sorted(rss_start), "a worker was restarted during the soak"
    assert sum(soak_events.values()) == len(calls)
    assert all(soak_events.get(c.request_id) == 1 for c in calls)
    assert max(growth.values()) <= TOLERANCE_KIB, figures["soak"]
