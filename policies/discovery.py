"""
Tool discovery: the console's own short-lived token for listing an MCP server's tools.

A server protected by this console answers ``tools/list`` only with a bearer token it can
introspect here. For an import, the console mints a *discovery token*: an access token of its
built-in agent, for the admin who asked, with no delegation and no scope, bound (RFC 8707
``resource``) to that one server, living 60 seconds and deleted once the listing is done.
``policies.decisions.decide`` allows such a token at its server and for no tool call.

The built-in agent is found by its registration source, ``"console"``, which no door can give an
agent (DCR and CIMD set theirs, the admin, the API and policy files create "manual" agents and
cannot change it), never by its client id, which an admin could give another agent. It has no
redirect URI and a secret nobody knows, so no OAuth flow can run as it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret

from audit.events import record
from policies.models import AccessToken, Agent, McpServer
from policies.tokens import issue_access_token

CONSOLE_SOURCE = "console"
CONSOLE_CLIENT_ID = "mcp-policy-console"
CONSOLE_AGENT_NAME = "MCP Policy Console (tool discovery)"
DISCOVERY_TOKEN_SECONDS = 60
PURPOSE = "tool_discovery"


class ConsoleAgentUnavailable(Exception):
    """The built-in agent cannot be created (its client id is taken by another agent)."""


def is_console_agent(agent: Agent) -> bool:
    return agent.registration_source == CONSOLE_SOURCE


def console_agent() -> Agent:
    """The console's built-in agent, created on first use."""
    agent = Agent.objects.filter(registration_source=CONSOLE_SOURCE).first()
    if agent is not None:
        return agent
    agent = Agent(
        client_id=CONSOLE_CLIENT_ID,
        name=CONSOLE_AGENT_NAME,
        client_type=Agent.CLIENT_CONFIDENTIAL,
        # No flow of the token endpoint serves this grant: the agent's tokens come from here only.
        authorization_grant_type=Agent.GRANT_CLIENT_CREDENTIALS,
        redirect_uris="",
        client_secret=generate_client_secret(),  # hashed on save and never shown
        registration_source=CONSOLE_SOURCE,
    )
    try:
        with transaction.atomic():
            agent.save()
            if agent.status != Agent.Status.ACTIVE:
                # Agent.save() applied the self-registration policy; the console's own agent is
                # not self-registered. This second save is recorded as a console change.
                agent.status = Agent.Status.ACTIVE
                agent.save(update_fields=["status"])
    except IntegrityError:
        # Created concurrently by another import, or the client id belongs to another agent.
        agent = Agent.objects.filter(registration_source=CONSOLE_SOURCE).first()
        if agent is None:
            raise ConsoleAgentUnavailable(
                f"Another agent has the console's client id {CONSOLE_CLIENT_ID!r}; "
                "paste a bearer token or give that agent another client id."
            ) from None
    return agent


def mint_discovery_token(server: McpServer, human: AbstractBaseUser) -> tuple[AccessToken, str]:
    """A discovery token for ``server`` on behalf of ``human``; returns the row and the raw value."""
    agent = console_agent()
    expires = timezone.now() + timedelta(seconds=DISCOVERY_TOKEN_SECONDS)
    with transaction.atomic():
        issued = issue_access_token(agent, human, None, (), expires, server=server)
        record(
            "token.issued",
            outcome="allow",
            actor=human,
            human=human,
            agent=agent,
            server=server,
            token=issued.token,
            detail={"purpose": PURPOSE, "scope": ""},
        )
    return issued.token, issued.value


@contextmanager
def discovery_token(server: McpServer, human: AbstractBaseUser) -> Iterator[str]:
    """A discovery token's raw value while the block runs; the token is deleted afterwards."""
    token, raw = mint_discovery_token(server, human)
    try:
        yield raw
    finally:
        AccessToken.objects.filter(pk=token.pk).delete()
