"""Seeds the fault tests' stack: ``python -m tests.faults.seed NAME TOKENS DELEGATIONS``.

Runs in its own process against the stack's database (DATABASE_URL), with the same fixtures'
functions the other tests use; prints one JSON line: the MCP server's Basic credentials, the
agent's client_id, TOKENS access tokens of one delegation, and DELEGATIONS more delegations (one
agent each) with two tokens apiece, to be revoked as a whole.
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import timedelta

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.utils import timezone  # noqa: E402

from policies.models import AccessToken, Agent, Delegation  # noqa: E402
from tests.conftest import REDIRECT_URI, allow_delegation, make_server  # noqa: E402

SCOPE = "search:read"


def delegation_with_tokens(human: User, server, name: str, count: int) -> tuple[Agent, Delegation, list[str]]:
    agent = Agent.objects.create(
        name=name,
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    delegation = Delegation.objects.create(
        human=human, agent=agent, server=server, scope=SCOPE, status=Delegation.Status.APPROVED
    )
    values = [secrets.token_urlsafe(32) for _ in range(count)]
    for value in values:  # one by one: DOT hashes the token in save(), which bulk_create skips
        AccessToken.objects.create(
            user=human,
            application=agent,
            delegation=delegation,
            token=value,
            scope=SCOPE,
            expires=timezone.now() + timedelta(hours=2),
        )
    return agent, delegation, values


def main(name: str, tokens: int, delegations: int) -> dict:
    registered = make_server(name, f"https://{name}.example.com/mcp", {"search": ("low", ["read"])})
    human = User.objects.create_user(f"{name}-human", password=secrets.token_urlsafe(16))
    allow_delegation(f"{name}-people", [human], registered.server, [SCOPE])
    agent, _, values = delegation_with_tokens(human, registered.server, f"{name} agent", tokens)
    by_delegation = {}
    for n in range(delegations):
        _, delegation, more = delegation_with_tokens(human, registered.server, f"{name} agent {n}", 2)
        by_delegation[str(delegation.pk)] = more
    return {
        "server_basic": registered.basic_auth(),
        "agent_client_id": agent.client_id,
        "tokens": values,
        "delegation_tokens": by_delegation,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
