"""
The audit trail end to end: an agent (the official MCP SDK client) calls tools of the example
calendar MCP server (a real uvicorn subprocess) for a human, with the console live. The console
records its decision on each call; the server reports each call's result through the event API;
an export shows both with the human, the agent, the server, tool, action and outcome, and shows
why a denied call was denied.
"""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from mcp import ClientSession

from audit.export import export_events
from audit.models import AuditEvent
from mcp_console_auth import arguments_digest
from policies.models import Agent
from tests import test_mcp_sdk_e2e as sdk_e2e
from tests.test_mcp_sdk_e2e import HumanAtBrowser, HumanRefused, SdkAgent

# The same human and running calendar server as the SDK end-to-end tests.
human = sdk_e2e.human
calendar_mcp = sdk_e2e.calendar_mcp

pytestmark = pytest.mark.timeout(120)

STANDUP = {"title": "Standup", "start": "2026-01-05T09:00"}
SHOWN = ("event_type", "human_username", "agent_client_id", "server_name", "tool", "action", "outcome")


def wait_for_results(count: int) -> None:
    """The server sends results in the background: wait for them (not a timing assertion)."""
    deadline = time.monotonic() + 30
    while AuditEvent.objects.filter(event_type="tool_call.result").count() < count:
        if time.monotonic() > deadline:
            pytest.fail("The MCP server's tool-call results did not reach the console.")
        time.sleep(0.2)


def export(fmt: str, **filters: str) -> tuple[bytes, dict]:
    out = io.BytesIO()
    manifest = export_events(filters, fmt, out)
    return out.getvalue(), manifest


def test_a_tool_call_through_the_example_server_is_exported_with_its_human_agent_and_outcome(
    live_console, human, calendar_mcp
):
    # Carol grants reading and creating events; deleting them is beyond her policy, so the
    # agent's step-up request for it shows her nothing she can grant and she refuses.
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read", "create_event:write"}, None])

    async def scenario(session: ClientSession):
        await session.call_tool("create_event", STANDUP)
        await session.call_tool("list_events", {})
        await session.call_tool("delete_event", {"event_id": 1})

    with pytest.raises(ExceptionGroup) as refused:
        SdkAgent(calendar_mcp.resource, carol).run(scenario)
    assert refused.group_contains(HumanRefused)
    wait_for_results(2)

    data, manifest = export("jsonl", human="carol")

    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert manifest["rows"] == len(rows)
    agent = Agent.objects.get(registration_source=Agent.RegistrationSource.DCR)
    calls = [row for row in rows if row["event_type"].startswith("tool_call.")]
    assert sorted(tuple(row[key] for key in SHOWN) for row in calls) == sorted(
        [
            ("tool_call.decision", "carol", agent.client_id, "calendar", "create_event", "write", "allow"),
            ("tool_call.decision", "carol", agent.client_id, "calendar", "list_events", "read", "allow"),
            ("tool_call.decision", "carol", agent.client_id, "calendar", "delete_event", "write", "deny"),
            # Reported by the MCP server: the tools that ran, and how that went.
            ("tool_call.result", "carol", agent.client_id, "calendar", "create_event", "write", "allow"),
            ("tool_call.result", "carol", agent.client_id, "calendar", "list_events", "read", "allow"),
        ]
    )
    (denied,) = [row for row in calls if row["outcome"] == "deny"]
    assert denied["reason"] == "scope_missing"
    # The result is tied to the same delegation and token as the decision that allowed it.
    decision, result = (
        next(row for row in calls if row["event_type"] == kind and row["tool"] == "create_event")
        for kind in ("tool_call.decision", "tool_call.result")
    )
    assert (result["delegation_id"], result["token_checksum"]) == (
        decision["delegation_id"],
        decision["token_checksum"],
    )
    assert result["token_checksum"]
    assert result["detail"]["result"] == "success"
    # The console holds a digest of the arguments, never the arguments themselves.
    assert result["detail"]["arguments_digest"] == arguments_digest(STANDUP)
    assert "Standup" not in data.decode()


def test_the_csv_export_shows_the_same_calls_with_the_human_and_the_agent(live_console, human, calendar_mcp):
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read"}])

    async def scenario(session: ClientSession):
        await session.call_tool("list_events", {})

    SdkAgent(calendar_mcp.resource, carol).run(scenario)
    wait_for_results(1)

    data, _ = export("csv", server="calendar", tool="list_events")

    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    rows = [row for row in rows if row["event_type"].startswith("tool_call.")]  # not the tool's creation
    agent = Agent.objects.get(registration_source=Agent.RegistrationSource.DCR)
    assert sorted((row["event_type"], row["outcome"]) for row in rows) == [
        ("tool_call.decision", "allow"),
        ("tool_call.result", "allow"),
    ]
    assert {(row["human_username"], row["agent_client_id"], row["action"]) for row in rows} == {
        ("carol", agent.client_id, "read")
    }
