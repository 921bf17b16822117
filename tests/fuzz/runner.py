"""Sending schemathesis cases to the console in-process, with the checks every answer must pass.

Each case goes through the real WSGI application (middleware, CSRF, sessions), inside the test's
transaction; the answer must not be a 5xx, must conform to the schema (status code, content type,
declared headers, body), must come within ``REQUEST_TIMEOUT`` seconds, and a refused request
(4xx) or a GET must leave the console's state exactly as it was.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.invariants import changed_tables, state_fingerprint, state_tables
from tests.fuzz.world import known_path_values

# Cases per operation and generation mode: small in `make test`, large in `make fuzz`.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))
REQUEST_TIMEOUT = 10  # seconds; a request still running then is a hang, not a slow answer
CHECKS = {
    GenerationMode.POSITIVE: [
        schemathesis.checks.not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ],
    # Invalid input: no 5xx, a documented status code, an answer in the schema's shape. Not
    # checked: the content type (a path value no route matches gets Django's HTML 404; see
    # /tmp/team/requests.md) and schemathesis's negative_data_rejection (DRF, like most APIs,
    # ignores query parameters and body fields it does not know, which that check calls a failure).
    GenerationMode.NEGATIVE: [
        schemathesis.checks.not_a_server_error,
        status_code_conformance,
    ],
}
# Cases sent so far, by (target, operation, status code): the summary the test run prints.
CASES: Counter[tuple[str, str, int]] = Counter()


class RequestHung(AssertionError):
    pass


def load_schema() -> schemathesis.schemas.BaseSchema:
    """The schema /api/schema/ serves (the same generator, without a request)."""
    return schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


@contextmanager
def request_deadline(seconds: float, what: str) -> Iterator[None]:
    """Fail a request that runs longer than ``seconds``, keeping pytest-timeout's own alarm."""

    def hung(signum, frame):
        raise RequestHung(f"{what}: no answer within {seconds} s")

    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.signal(signal.SIGALRM, hung)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_remaining:
            signal.setitimer(signal.ITIMER_REAL, max(outer_remaining - (time.monotonic() - started), 0.01))


@contextmanager
def in_process_requests() -> Iterator[None]:
    """Requests share the test's connection and transaction: Django must not close it after each
    one (its test client does the same)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _with_real_values(data: st.DataObject, case, known: dict[str, list[str]]) -> None:
    """Now and then, put a real id, name or token where the case has a made-up one, so that the
    fuzz reaches past "not found" into the code that acts on real rows."""
    if case.path_parameters:
        segments = case.operation.path.split("/")
        # The collection is the segment before the first parameter: /api/agents/{id}/approve/.
        collection = segments[next(i for i, s in enumerate(segments) if s.startswith("{")) - 1]
        paths = known_path_values()
        for name in case.path_parameters:
            real = paths.get(collection)
            if real and data.draw(st.booleans(), label=f"real {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(real), label=name)
    for container in (case.body, case.query):
        if not isinstance(container, dict):
            continue
        for name in list(container):
            real = known.get(name)
            if real and data.draw(st.booleans(), label=f"real {name}"):
                container[name] = data.draw(st.sampled_from(real), label=name)


def fuzz_operation(
    target: str,
    operation,
    credentials: dict,
    known: dict[str, list[str]],
    examples: int = EXAMPLES,
) -> int:
    """Send up to ``examples`` valid and as many invalid cases to ``operation``; return how many
    were sent."""
    modes = [GenerationMode.POSITIVE]
    if operation.definition.raw.get("parameters") or operation.body:  # something to make invalid
        modes.append(GenerationMode.NEGATIVE)
    sender = _Sender(target, operation, credentials, known)
    with in_process_requests():
        for mode in modes:
            sender.run(mode, examples)
    return sender.sent


class _Sender:
    """Draws one case, sends it and checks the answer and the state."""

    def __init__(self, target: str, operation, credentials: dict, known: dict[str, list[str]]) -> None:
        self.target, self.operation, self.credentials, self.known = target, operation, credentials, known
        self.label = f"{operation.method.upper()} {operation.path}"
        self.tables = state_tables()
        self.application = WSGIHandler()  # the console's WSGI application, as console/wsgi.py builds it
        self.strategies = {mode: operation.as_strategy(generation_mode=mode) for mode in GenerationMode}
        self.sent = 0

    def run(self, mode: GenerationMode, examples: int) -> None:
        @settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(data=st.data())
        def cases(data: st.DataObject) -> None:
            self.send(data, mode)

        cases()

    def send(self, data: st.DataObject, mode: GenerationMode) -> None:
        case = data.draw(self.strategies[mode], label="case")
        if mode == GenerationMode.POSITIVE:  # a real value would make an invalid case valid
            _with_real_values(data, case, self.known)
        before = state_fingerprint(self.tables)
        with request_deadline(REQUEST_TIMEOUT, self.label):
            response = case.call(app=self.application, **self.credentials)
        self.sent += 1
        CASES[(self.target, self.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS[mode])
        # A refused request, and any GET, leaves the console's state as it was.
        if 400 <= response.status_code < 500 or case.method == "GET":
            changed = changed_tables(before, state_fingerprint(self.tables))
            assert not changed, f"{self.label} answered {response.status_code} but changed {changed}"
