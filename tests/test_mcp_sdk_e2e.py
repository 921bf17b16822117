"""
End to end, all on loopback: the official MCP SDK client (``OAuthClientProvider``) against the
console (pytest-django's live server) and the example calendar MCP server (a real uvicorn
subprocess using ``mcp_console_auth``), with a human who logs in and answers consent pages.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from django.contrib.auth.models import User
from django.db import connections
from mcp import ClientSession, MCPError
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from audit.models import AuditEvent
from policies.models import AccessToken, Agent, Delegation, RefreshToken
from policies.services import revoke_delegation
from tests.conftest import RegisteredServer, allow_delegation, make_server
from tests.support import free_loopback_port, page_form

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "carol-password-123"
AGENT_REDIRECT_URI = "http://127.0.0.1:53683/callback"  # never listened on: the human hands the code over
CALENDAR_TOOLS = {
    "list_events": ("low", ["read"]),
    "create_event": ("high", ["write"]),
    "delete_event": ("high", ["write"]),
}

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")


# --- The console and the MCP server, really running ------------------------------------------


@pytest.fixture
def human(live_console) -> User:
    """Carol, whose group may delegate reading and creating events, but not deleting them."""
    return User.objects.create_user("carol", password=PASSWORD)


@pytest.fixture
def calendar_mcp(live_console, human, tmp_path) -> Iterator[RegisteredServer]:
    """The example calendar server, registered in the console and running as a subprocess."""
    port = free_loopback_port()
    registered = make_server("calendar", f"http://127.0.0.1:{port}/mcp", CALENDAR_TOOLS)
    allow_delegation("staff", [human], registered.server, ["list_events:read", "create_event:write"])
    with running_example("calendar_server.py", registered, live_console, port, tmp_path):
        yield registered


@contextmanager
def running_example(
    script: str, registered: RegisteredServer, console_url: str, port: int, tmp_path, **env: str
) -> Iterator[None]:
    """An example MCP server of examples/ as a subprocess, with its console credentials, until exit."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CONSOLE_URL": console_url,
        "MCP_SERVER_CLIENT_ID": registered.client_id,
        "MCP_SERVER_CLIENT_SECRET": registered.client_secret,
        "MCP_SERVER_URL": f"http://127.0.0.1:{port}",
        **env,
    }
    log = tmp_path / f"{script}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / script)], env=env, stdout=out, stderr=out
        )
    try:
        wait_until_serving(prm_url(registered), process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The calendar server exited:\n{log.read_text()}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"The calendar server did not start:\n{log.read_text()}")


# --- The human at the browser -----------------------------------------------------------------


class HumanRefused(Exception):
    """The human refused the authorization request: no code comes back."""


@dataclass
class ConsentPage:
    url: str
    requested: list[str]
    grantable: list[str]
    not_grantable: list[str]


@dataclass
class HumanAtBrowser:
    """A person logged in to the console in a browser, answering consent pages in order.

    Each answer is the set of scopes to leave ticked before "Allow", or None for "Deny". With
    no answer left the human denies, so a client asking again and again cannot loop forever.
    """

    console_url: str
    username: str
    answers: list[set[str] | None]
    pages: list[ConsentPage] = field(default_factory=list)
    browser: httpx2.AsyncClient | None = None
    _redirect: str = ""

    async def log_in(self) -> None:
        self.browser = httpx2.AsyncClient(base_url=self.console_url, follow_redirects=False, timeout=10)
        page = await self.browser.get("/accounts/login/")
        csrf = page_form(page.text).value("csrfmiddlewaretoken")
        response = await self.browser.post(
            "/accounts/login/",
            data={"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        )
        assert response.status_code == 302, response.text

    async def log_out(self) -> None:
        await self.browser.aclose()

    async def redirect_handler(self, authorization_url: str) -> None:
        """The SDK sends the human's browser to the console's authorization endpoint."""
        page = await self.browser.get(authorization_url)
        assert page.status_code == 200, page.text[:500]
        form = page_form(page.text)
        grantable, not_grantable = form.fields.get("grant", []), form.disabled.get("grant", [])
        requested = form.value("scope").split()
        self.pages.append(ConsentPage(authorization_url, requested, grantable, not_grantable))
        answer = self.answers.pop(0) if self.answers else None
        data: dict[str, Any] = {name: values for name, values in form.fields.items() if name != "grant"}
        if answer is not None:
            data["grant"] = [scope for scope in grantable if scope in answer]
            data["allow"] = "Allow"
        response = await self.browser.post(authorization_url, data=data)
        assert response.status_code == 302, response.text[:500]
        self._redirect = response.headers["location"]

    async def callback_handler(self) -> AuthorizationCodeResult:
        """The redirect back to the agent's loopback address, as the agent would receive it."""
        assert self._redirect.startswith(AGENT_REDIRECT_URI), self._redirect
        query = {key: values[0] for key, values in parse_qs(urlsplit(self._redirect).query).items()}
        if "code" not in query:
            raise HumanRefused(query.get("error"))
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


# --- The agent: the official SDK client -------------------------------------------------------


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    www_authenticate: str


@dataclass
class SdkAgent:
    """An MCP client built on the official SDK's ``OAuthClientProvider``, acting for ``human``.

    ``exchanges`` lists every HTTP exchange it made (discovery, registration, token requests and
    MCP requests) as the SDK's auth flow sent them.
    """

    mcp_url: str
    human: HumanAtBrowser
    exchanges: list[Exchange] = field(default_factory=list)

    def run(self, scenario: Callable[[ClientSession], Awaitable[T]]) -> T:
        """Run ``scenario`` in one MCP session; an error in the SDK's auth flow ends the session."""
        return asyncio.run(self._run(scenario))

    async def _run(self, scenario: Callable[[ClientSession], Awaitable[T]]) -> T:
        provider = OAuthClientProvider(
            server_url=self.mcp_url,
            client_metadata=OAuthClientMetadata(
                client_name="SDK e2e agent",
                redirect_uris=[AGENT_REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=MemoryStorage(),
            redirect_handler=self.human.redirect_handler,
            callback_handler=self.human.callback_handler,
        )
        await self.human.log_in()
        try:
            async with httpx2.AsyncClient(
                auth=provider, event_hooks={"response": [self._record]}, timeout=20
            ) as http:
                async with streamable_http_client(self.mcp_url, http_client=http) as (read, write):
                    async with ClientSession(read, write, read_timeout_seconds=20) as session:
                        await session.initialize()
                        return await scenario(session)
        finally:
            await self.human.log_out()

    async def _record(self, response: httpx2.Response) -> None:
        request = response.request
        self.exchanges.append(
            Exchange(
                request.method,
                str(request.url),
                response.status_code,
                response.headers.get("www-authenticate", ""),
            )
        )

    def challenged_scopes(self) -> list[str]:
        """The ``scope`` of each 403 challenge the agent received, in order."""
        return [
            re.search(r'scope="([^"]*)"', e.www_authenticate)[1]
            for e in self.exchanges
            if e.status == 403 and 'error="insufficient_scope"' in e.www_authenticate
        ]


async def in_django(function: Callable[[], T]) -> T:
    """Run ORM code from inside the agent's session, in a thread with its own connection."""

    def run() -> T:
        try:
            return function()
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


# --- The tests --------------------------------------------------------------------------------


def test_sdk_client_discovers_registers_and_calls_the_tools_the_human_granted(
    live_console, human, calendar_mcp
):
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read", "create_event:write"}])

    async def scenario(session: ClientSession):
        created = await session.call_tool("create_event", {"title": "Standup", "start": "2026-01-05T09:00"})
        listed = await session.call_tool("list_events", {})
        return created, listed

    agent = SdkAgent(calendar_mcp.resource, carol)
    created, listed = agent.run(scenario)

    assert not created.is_error and not listed.is_error
    # The MCP server learnt from the console which human the agent acts for.
    assert listed.structured_content["result"] == [
        {"id": 1, "title": "Standup", "start": "2026-01-05T09:00", "created_by": "carol"}
    ]
    # Discovery: the MCP server's protected resource metadata named the console, whose metadata was read.
    urls = [e.url for e in agent.exchanges]
    assert prm_url(calendar_mcp) in urls
    assert f"{live_console}/.well-known/oauth-authorization-server" in urls
    # Registration: the SDK registered itself by DCR, as a public client.
    registered = Agent.objects.get(registration_source=Agent.RegistrationSource.DCR)
    assert registered.client_type == Agent.CLIENT_PUBLIC
    assert registered.redirect_uris == AGENT_REDIRECT_URI
    # PKCE with S256, and the resource indicator, on the authorization request.
    (page,) = carol.pages
    query = parse_qs(urlsplit(page.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["resource"] == [calendar_mcp.resource]
    # Consent: the human saw every tool scope; the one her policy forbids could not be ticked.
    assert sorted(page.requested) == ["create_event:write", "delete_event:write", "list_events:read"]
    assert page.not_grantable == ["delete_event:write"]
    delegation = Delegation.objects.get(human=human, agent=registered, server=calendar_mcp.server)
    assert delegation.scopes == {"list_events:read", "create_event:write"}
    # Each tool call was decided by the console, with tool context, and audited.
    decisions = AuditEvent.objects.filter(event_type="tool_call.decision", outcome="allow", human_id=human.pk)
    assert sorted(decisions.values_list("tool", flat=True)) == ["create_event", "list_events"]
    # One introspection per MCP request: a tool call's check, with tool context, also serves the
    # SDK's bearer check of that request (the first request, with no token, needed none).
    with_token = [e for e in agent.exchanges if e.url == calendar_mcp.resource and e.status != 401]
    introspections = AuditEvent.objects.filter(event_type__in=["introspection", "tool_call.decision"])
    assert introspections.count() == len(with_token)


def test_a_tool_outside_the_granted_scopes_is_refused_with_a_step_up_challenge(
    live_console, human, calendar_mcp
):
    # Carol unticks create_event:write, then denies the step-up request for it.
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read"}, None])

    async def scenario(session: ClientSession):
        await session.call_tool("list_events", {})
        await session.call_tool("create_event", {"title": "Offsite", "start": "2026-02-01T10:00"})

    agent = SdkAgent(calendar_mcp.resource, carol)
    with pytest.raises(ExceptionGroup) as refused:
        agent.run(scenario)

    assert refused.group_contains(HumanRefused)
    assert agent.challenged_scopes() == ["create_event:write"]
    (challenge,) = [e for e in agent.exchanges if e.status == 403]
    assert challenge.www_authenticate.startswith('Bearer error="insufficient_scope", ')
    assert f'resource_metadata="{prm_url(calendar_mcp)}"' in challenge.www_authenticate
    # The SDK asked the human again, for what it had plus the missing scope; she refused.
    assert len(carol.pages) == 2
    assert {"create_event:write", "list_events:read"} <= set(carol.pages[1].requested)
    # The console refused the call before the tool ran, and recorded why.
    denied = AuditEvent.objects.get(event_type="tool_call.decision", outcome="deny")
    assert (denied.tool, denied.action, denied.reason, denied.human_id) == (
        "create_event",
        "write",
        "scope_missing",
        human.pk,
    )
    assert not AuditEvent.objects.filter(
        event_type="tool_call.decision", outcome="allow", tool="create_event"
    )
    assert Delegation.objects.get(human=human).scopes == {"list_events:read"}


def test_a_scope_the_policy_forbids_stays_refused_after_step_up_without_looping(
    live_console, human, calendar_mcp
):
    # Carol allows all she may, each time she is asked; her policy never lets her delegate deletion.
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read", "create_event:write"}] * 3)

    async def scenario(session: ClientSession):
        with pytest.raises(MCPError):
            await session.call_tool("delete_event", {"event_id": 1})
        return await session.call_tool("list_events", {})

    agent = SdkAgent(calendar_mcp.resource, carol)
    listed = agent.run(scenario)

    # One step-up, then the second refusal reaches the caller as an error: the session goes on.
    assert len(carol.pages) == 2
    assert carol.pages[1].not_grantable == ["delete_event:write"]
    assert agent.challenged_scopes() == ["delete_event:write", "delete_event:write"]
    assert not listed.is_error
    assert not AuditEvent.objects.filter(
        event_type="tool_call.decision", outcome="allow", tool="delete_event"
    )


def test_after_the_delegation_is_revoked_the_next_call_fails(live_console, human, calendar_mcp):
    # Carol grants reading; asked again after the revocation, she refuses.
    carol = HumanAtBrowser(live_console, "carol", answers=[{"list_events:read"}])

    def revoke() -> None:
        delegation = Delegation.objects.get(human=human, status=Delegation.Status.APPROVED)
        revoke_delegation(delegation, by=human)

    async def scenario(session: ClientSession):
        await session.call_tool("list_events", {})
        await in_django(revoke)
        await session.call_tool("list_events", {})

    agent = SdkAgent(calendar_mcp.resource, carol)
    with pytest.raises(ExceptionGroup) as failed:
        agent.run(scenario)

    assert failed.group_contains(HumanRefused)
    mcp_posts = [e.status for e in agent.exchanges if e.method == "POST" and e.url == calendar_mcp.resource]
    assert mcp_posts[-1] == 401  # the MCP server refused the revoked token; no retry got through
    assert len(carol.pages) == 2
    # Nothing the agent holds works any more, and no new delegation or token came of it.
    registered = Agent.objects.get(registration_source=Agent.RegistrationSource.DCR)
    assert not AccessToken.objects.filter(application=registered, delegation__isnull=False).exists()
    assert not RefreshToken.objects.filter(application=registered, revoked__isnull=True).exists()
    assert list(Delegation.objects.filter(agent=registered).values_list("status", flat=True)) == ["revoked"]


def prm_url(server: RegisteredServer) -> str:
    """RFC 9728 §3.1: the well-known URI with the resource's path appended."""
    parts = urlsplit(server.resource)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}"
