"""schemathesis against the console's OpenAPI schema: every management API operation and every
OAuth endpoint, with valid and invalid input. No answer is a 5xx, every answer conforms to the
schema and comes in time, a refused request changes nothing, and the database invariants hold
afterwards. The run prints how many cases were sent (see tests/fuzz/conftest.py)."""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings
from django.test import Client

from tests.fuzz.invariants import broken_invariants
from tests.fuzz.runner import EXAMPLES, fuzz_operation, load_schema
from tests.fuzz.world import build_world

# Outbound: it connects to the MCP server to list its tools (tests/test_tool_import.py covers it).
NOT_FUZZED = {("POST", "/api/servers/{name}/import-tools/")}

OPERATIONS = [
    result.ok()
    for result in load_schema().get_all_operations()
    if (result.ok().method.upper(), result.ok().path) not in NOT_FUZZED
]


def _label(operation) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _uses_server_credentials(operation) -> bool:
    return any(
        "mcpServerBasic" in requirement for requirement in operation.definition.raw.get("security", [])
    )


@pytest.fixture
def world(db):
    return build_world()


def console_session(user) -> dict:
    """A security admin's console session and the CSRF token that goes with it, as a browser has."""
    browser = Client()
    browser.force_login(user)
    csrf = secrets.token_hex(16)
    header = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-")
    return {
        "cookies": {
            settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value,
            settings.CSRF_COOKIE_NAME: csrf,
        },
        "headers": {header: csrf},
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=_label)
def test_fuzzed_requests_get_schema_answers_and_leave_the_console_consistent(world, operation):
    if _uses_server_credentials(operation):
        credentials = {"headers": {"Authorization": world.calendar.basic_auth()}}
    elif operation.path.startswith("/api/"):
        credentials = console_session(world.admin)
    else:
        credentials = {}  # agents: a public agent authenticates with its client_id alone
    target = "management API" if operation.path.startswith("/api/") else "OAuth"
    # Five OAuth endpoints next to some seventy API operations: each gets more cases.
    examples = EXAMPLES if target == "management API" else 4 * EXAMPLES

    sent = fuzz_operation(target, operation, credentials, world.known_values(), examples=examples)

    assert sent > 0
    assert broken_invariants() == []
