"""Fixtures that build real objects: servers with tools, humans in policy groups, agents, and an
OAuth driver that walks the real authorization-code + PKCE flow through the console's views."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from policies.models import Agent, DelegationPolicy, McpServer, Tool, ToolAction
from tests.celery_worker import celery_worker  # noqa: F401  (a fixture)

REDIRECT_URI = "http://127.0.0.1:53682/callback"
ALICE_PASSWORD = "alice-password-123"


@dataclass
class RegisteredServer:
    server: McpServer
    client_id: str
    client_secret: str

    @property
    def resource(self) -> str:
        return self.server.resource

    def basic_auth(self) -> str:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def make_server(name: str, resource: str, tools: dict[str, tuple[str, list[str]]]) -> RegisteredServer:
    """A server with tools {name: (risk, [actions])}; returns it with its one-time secret."""
    server = McpServer(name=name, resource=resource)
    secret = server.set_new_credentials()
    server.save()
    for tool_name, (risk, actions) in tools.items():
        tool = Tool.objects.create(server=server, name=tool_name, risk=risk, description=f"{tool_name} tool")
        for action in actions:
            ToolAction.objects.create(tool=tool, name=action)
    return RegisteredServer(server, server.client_id, secret)


def allow_delegation(group_name: str, members: list[User], server: McpServer, scopes: list[str]) -> None:
    group, _ = Group.objects.get_or_create(name=group_name)
    group.user_set.add(*members)
    policy, _ = DelegationPolicy.objects.get_or_create(group=group)
    for scope in scopes:
        tool, action = scope.split(":")
        policy.may_delegate.add(ToolAction.objects.get(tool__server=server, tool__name=tool, name=action))


@pytest.fixture
def calendar(db) -> RegisteredServer:
    return make_server(
        "calendar",
        "https://calendar.example.com/mcp",
        {"list_events": ("low", ["read"]), "create_event": ("high", ["write"])},
    )


@pytest.fixture
def mail(db) -> RegisteredServer:
    return make_server("mail", "https://mail.example.com/mcp", {"send": ("high", ["write"])})


@pytest.fixture
def alice(db, calendar, mail) -> User:
    """A human in the staff group, who may delegate every calendar and mail scope."""
    user = User.objects.create_user("alice", password=ALICE_PASSWORD)
    allow_delegation("staff", [user], calendar.server, ["list_events:read", "create_event:write"])
    allow_delegation("mailers", [user], mail.server, ["send:write"])
    return user


@pytest.fixture
def agent(db) -> Agent:
    """A public agent (like an MCP client after DCR) with a loopback redirect URI."""
    return Agent.objects.create(
        name="Research agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class OAuthDriver:
    """Walks the authorization-code flow as an agent and its human would, over the test client."""

    def __init__(self, browser: Client, agent: Agent):
        self.browser = browser  # the human's logged-in browser
        self.agent = agent
        self.client = Client()  # the agent's own HTTP client (no session)

    def authorize_params(self, resource: str | None, scope: str | None = None, **extra) -> dict:
        self.verifier, challenge = pkce_pair()
        params = {
            "response_type": "code",
            "client_id": self.agent.client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(8),
        }
        if resource is not None:
            params["resource"] = resource
        if scope is not None:
            params["scope"] = scope
        params.update(extra)
        return params

    def consent(self, params: dict, grant: list[str] | None = None, allow: bool = True):
        """GET the consent page, then POST the human's answer; returns the final response."""
        page = self.browser.get("/oauth/authorize/", params)
        assert page.status_code == 200, page.content[:500]
        form = page.context["form"]
        data = {bf.name: bf.value() or "" for bf in form if bf.is_hidden}
        data["grant"] = (
            grant if grant is not None else [r["scope"] for r in page.context["scope_rows"] if r["grantable"]]
        )
        if allow:
            data["allow"] = "Allow"
        return self.browser.post("/oauth/authorize/", data)

    def code_from(self, response) -> str:
        assert response.status_code == 302, response.content[:500]
        query = parse_qs(urlsplit(response["Location"]).query)
        assert "code" in query, response["Location"]
        return query["code"][0]

    def get_code(self, resource: str, scope: str | None = None, grant: list[str] | None = None) -> str:
        return self.code_from(self.consent(self.authorize_params(resource, scope), grant))

    def exchange(self, code: str, resource: str | None = None, verifier: str | None = None):
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": self.agent.client_id,
            "code_verifier": verifier or self.verifier,
        }
        if resource is not None:
            data["resource"] = resource
        return self.client.post("/oauth/token/", form(data), FORM)

    def tokens(self, resource: str, scope: str | None = None, grant: list[str] | None = None) -> dict:
        response = self.exchange(self.get_code(resource, scope, grant), resource)
        assert response.status_code == 200, response.content
        return response.json()

    def refresh(self, refresh_token: str, resource: str | None = None):
        data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.agent.client_id,
        }
        if resource is not None:
            data["resource"] = resource
        return self.client.post("/oauth/token/", form(data), FORM)


@pytest.fixture
def browser(alice) -> Client:
    browser = Client()
    browser.force_login(alice)
    return browser


@pytest.fixture
def oauth(browser, agent) -> OAuthDriver:
    return OAuthDriver(browser, agent)


def form(data: dict) -> str:
    return urlencode(data, doseq=True)


FORM = "application/x-www-form-urlencoded"


def introspect(server: RegisteredServer, token: str, **context: str):
    return Client().post(
        "/oauth/introspect/", form({"token": token, **context}), FORM, HTTP_AUTHORIZATION=server.basic_auth()
    )


@pytest.fixture
def live_console(live_server, settings) -> str:
    """The console really serving on loopback, its one issuer string being its live URL."""
    settings.ISSUER = live_server.url
    # DOT reloads its settings on setting_changed: metadata `issuer` and the `iss` parameter follow.
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": live_server.url}
    return live_server.url
