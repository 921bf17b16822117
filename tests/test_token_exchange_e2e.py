"""
Token exchange end to end, all on loopback: the official MCP SDK client gets a token for the
assistant server (``examples/assistant_server.py``, a real uvicorn subprocess); the assistant's
tool exchanges it at the console (pytest-django's live server) for a token bound to a calendar
server (an SDK ``MCPServer`` protected by ``mcp_console_auth``, in a thread) and calls it there.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx2
import pytest
from django.contrib.auth.models import User
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientMetadata

from audit.export import export_events
from policies.models import AccessToken, Agent, ExchangePolicy, ToolAction
from policies.revocation import revoke_agent_tokens
from tests.conftest import RegisteredServer, allow_delegation, make_server
from tests.live_mcp import serving_protected
from tests.support import free_loopback_port
from tests.test_mcp_sdk_e2e import (
    AGENT_REDIRECT_URI,
    PASSWORD,
    HumanAtBrowser,
    HumanRefused,
    MemoryStorage,
    in_django,
    running_example,
)

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


@pytest.fixture
def carol(live_console) -> User:
    return User.objects.create_user("carol", password=PASSWORD)


def calendar_server(**auth: Any) -> MCPServer:
    """Server B: its one tool answers with what the console's introspection told it of the caller."""
    mcp = MCPServer("calendar", **auth)

    @mcp.tool()
    def list_events() -> dict[str, Any]:
        """List the events in the calendar."""
        token = get_access_token()
        claims = token.claims or {}
        return {
            "events": [],
            "caller": {"sub": token.subject, "username": claims.get("username"), "act": claims.get("act")},
        }

    return mcp


@pytest.fixture
def calendar(live_console, carol) -> Iterator[RegisteredServer]:
    registered = make_server(
        "calendar", f"http://127.0.0.1:{free_loopback_port()}/mcp", {"list_events": ("low", ["read"])}
    )
    allow_delegation("staff", [carol], registered.server, ["list_events:read"])
    with serving_protected(calendar_server, live_console, registered, {"list_events": "list_events:read"}):
        yield registered


@pytest.fixture
def assistant(live_console, carol, calendar, tmp_path) -> Iterator[RegisteredServer]:
    """Server A, the example, as a subprocess; the hop assistant → calendar allows reading events."""
    port = free_loopback_port()
    registered = make_server("assistant", f"http://127.0.0.1:{port}/mcp", {"agenda": ("low", ["read"])})
    allow_delegation("staff", [carol], registered.server, ["agenda:read"])
    hop = ExchangePolicy.objects.create(source=registered.server, target=calendar.server)
    hop.scopes.add(ToolAction.objects.get(tool__server=calendar.server, name="read"))
    with running_example(
        "assistant_server.py", registered, live_console, port, tmp_path, CALENDAR_MCP_URL=calendar.resource
    ):
        yield registered


def run_agent(
    mcp_url: str,
    human: HumanAtBrowser,
    storage: MemoryStorage,
    scenario: Callable[[ClientSession], Awaitable[T]],
) -> T:
    """One MCP session of the agent (the official SDK client) at ``mcp_url``."""

    async def run() -> T:
        provider = OAuthClientProvider(
            server_url=mcp_url,
            client_metadata=OAuthClientMetadata(
                client_name="SDK exchange agent",
                redirect_uris=[AGENT_REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=storage,
            redirect_handler=human.redirect_handler,
            callback_handler=human.callback_handler,
        )
        await human.log_in()
        try:
            async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
                async with streamable_http_client(mcp_url, http_client=http) as (read, write):
                    async with ClientSession(read, write, read_timeout_seconds=30) as session:
                        await session.initialize()
                        return await scenario(session)
        finally:
            await human.log_out()

    return asyncio.run(run())


def exported_events() -> list[dict[str, Any]]:
    out = io.BytesIO()
    export_events({}, "jsonl", out)
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


def test_a_tool_exchanges_the_agents_token_and_calls_another_server_as_the_same_human_with_the_chain(
    live_console, carol, calendar, assistant
):
    # The human stays in the chain: she lets the agent read her calendar first (its own session
    # there), then lets it use the assistant.
    on_calendar = MemoryStorage()
    human = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read"}])

    async def read_calendar(session: ClientSession):
        return (await session.call_tool("list_events", {})).structured_content

    direct = run_agent(calendar.resource, human, on_calendar, read_calendar)
    agent = Agent.objects.get(registration_source=Agent.RegistrationSource.DCR)
    assert direct["caller"]["act"] == {"sub": agent.client_id}

    on_assistant = MemoryStorage()
    on_assistant.client_info = on_calendar.client_info  # the same agent, registered once
    human = HumanAtBrowser(live_console, "carol", answers=[{"agenda:read"}])
    outcome: dict[str, Any] = {}

    async def agenda_then_revocation(session: ClientSession):
        result = await session.call_tool("agenda", {})
        outcome["agenda"] = result.structured_content
        # An administrator revokes the agent: everything it holds, on every server.
        await in_django(lambda: revoke_agent_tokens(agent, by=None))
        await session.call_tool("agenda", {})

    with pytest.raises(ExceptionGroup) as stopped:
        run_agent(assistant.resource, human, on_assistant, agenda_then_revocation)

    # Server B's introspection: the human as sub, the assistant acting for the agent in act.
    caller = outcome["agenda"]["calendar"]["caller"]
    assert (caller["sub"], caller["username"]) == (str(carol.pk), "carol")
    assert caller["act"] == {"sub": assistant.resource, "act": {"sub": agent.client_id}}

    # The exported audit shows the exchange and the tool call on B with the full chain:
    # human carol, actors assistant then agent (outermost first), server calendar.
    events = exported_events()
    chain = [{"type": "server", "id": "assistant"}, {"type": "agent", "id": agent.client_id}]
    (exchanged,) = [e for e in events if e["event_type"] == "token.exchanged"]
    assert (exchanged["outcome"], exchanged["human_username"], exchanged["server_name"]) == (
        "allow",
        "carol",
        "calendar",
    )
    assert exchanged["actors"] == chain
    at_calendar = [
        e
        for e in events
        if e["event_type"] == "tool_call.decision" and e["server_name"] == "calendar" and e["actors"] == chain
    ]
    assert [(e["human_username"], e["tool"], e["outcome"]) for e in at_calendar] == [
        ("carol", "list_events", "allow")
    ]

    # Revoking the agent stopped both hops: the assistant refused the next call (the SDK asked
    # the human again, who said no), the token exchanged for the calendar is gone, and the
    # assistant's old token can neither be used nor exchanged again.
    assert stopped.group_contains(HumanRefused)
    assert not AccessToken.objects.filter(application=agent, delegation__isnull=False).exists()
    old = on_assistant.tokens.access_token
    auth = httpx2.BasicAuth(assistant.client_id, assistant.client_secret)
    introspection = httpx2.post(f"{live_console}/oauth/introspect/", data={"token": old}, auth=auth)
    assert introspection.json() == {"active": False}
    again = httpx2.post(
        f"{live_console}/oauth/token/",
        data={
            "grant_type": GRANT,
            "subject_token": old,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": calendar.resource,
        },
        auth=auth,
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert (
        len(
            [e for e in exported_events() if e["event_type"] == "tool_call.decision" and e["actors"] == chain]
        )
        == 1
    )
