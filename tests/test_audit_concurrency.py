"""Concurrent writers never wait for the chain, and the sealer loses and reorders nothing."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from audit.chain import seal_pending_events, verify_chain
from audit.events import record
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 6
EVENTS_EACH = 40


def in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connection.close()  # each thread has its own PostgreSQL connection

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_concurrent_writers_and_a_running_sealer_leave_a_complete_verified_chain():
    recorded_by_setup = AuditEvent.objects.count()  # e.g. the roles created after migrate
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def write(writer: int) -> None:
        try:
            for n in range(EVENTS_EACH):
                with transaction.atomic():  # some events commit in pairs, as a view's would
                    record("tool_call.decision", outcome="allow", detail={"writer": writer, "n": n})
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    def seal_until_writers_are_done() -> None:
        try:
            while not writers_done.is_set():
                seal_pending_events(batch_size=25)
        except BaseException as error:
            errors.append(error)

    sealer = in_thread(seal_until_writers_are_done)
    second_sealer = in_thread(seal_until_writers_are_done)  # the advisory lock keeps them apart
    writers = [in_thread(write, w) for w in range(WRITERS)]
    for thread in writers:
        thread.join()
    writers_done.set()
    sealer.join()
    second_sealer.join()
    seal_pending_events()

    assert errors == []
    assert AuditEvent.objects.filter(event_type="tool_call.decision").count() == WRITERS * EVENTS_EACH
    total = recorded_by_setup + WRITERS * EVENTS_EACH
    assert AuditEvent.objects.count() == total
    assert AuditEvent.objects.filter(chain_seq__isnull=True).count() == 0
    positions = sorted(AuditEvent.objects.values_list("chain_seq", flat=True))
    assert positions == list(range(1, total + 1))
    result = verify_chain()
    assert (result.ok, result.events_checked) == (True, total), result.message


def test_an_event_committing_after_a_later_one_was_sealed_is_chained_after_it():
    seal_pending_events()  # what the setup recorded
    inserted, release = threading.Event(), threading.Event()
    slow: dict[str, int] = {}

    def slow_writer() -> None:
        with transaction.atomic():
            slow["id"] = record("slow", outcome="allow").id
            inserted.set()
            release.wait(timeout=30)

    thread = in_thread(slow_writer)
    assert inserted.wait(timeout=30)
    fast = record("fast", outcome="allow")
    assert fast.id > slow["id"]
    assert seal_pending_events() == 1  # the slow event is not committed: it cannot be seen yet
    release.set()
    thread.join()
    assert seal_pending_events() == 1

    late = AuditEvent.objects.get(pk=slow["id"])
    assert late.chain_seq == AuditEvent.objects.get(pk=fast.id).chain_seq + 1
    assert verify_chain().ok
