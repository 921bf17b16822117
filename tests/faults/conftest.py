"""Fixtures of the fault tests: the throwaway stack they break, and the figures RELIABILITY.md shows.

With ``RELIABILITY_FIGURES=<file>`` set, the figures each fault test gathered (requests sent,
faults injected, errors, events lost, recovery time) are written to that file as JSON at the end
of the session; ``scripts/render-reliability`` turns them into RELIABILITY.md (``make reliability``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import Stack


class _Boot(threading.Thread):
    """Starts the stack in the background: its migrate takes a while, and the tests that need a
    database run first (pytest-django orders them so), while it boots."""

    def __init__(self) -> None:
        super().__init__(name="faults-stack-boot", daemon=True)
        self.stack = Stack()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stack.start()
        except BaseException as error:  # re-raised in the test that needs the stack
            self.error = error


_boot: list[_Boot] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any("stack" in getattr(item, "fixturenames", ()) for item in session.items):
        _boot.append(_Boot())
        _boot[0].start()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if not _boot:  # not seen at collection (a plugin added the test later): boot now
        _boot.append(_Boot())
        _boot[0].start()
    boot = _boot[0]
    boot.join()
    if boot.error is not None:
        raise boot.error
    yield boot.stack


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The stack goes with the session, also when no test ended up using it."""
    for boot in _boot:
        boot.join()
        boot.stack.close()


@pytest.fixture(scope="session")
def figures() -> Iterator[dict]:
    collected: dict = {}
    yield collected
    target = os.environ.get("RELIABILITY_FIGURES")
    if target and collected:
        path = Path(target)
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**previous, **collected}, indent=2, sort_keys=True) + "\n")
