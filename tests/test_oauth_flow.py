"""The authorization-code flow with PKCE, bound to one MCP server, ending at introspection."""

from policies.models import AccessToken, Delegation
from tests.conftest import introspect


def test_human_consent_yields_a_token_bound_to_the_server_with_granted_scopes(oauth, alice, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read create_event:write")

    assert set(tokens["scope"].split()) == {"list_events:read", "create_event:write"}
    delegation = Delegation.objects.get(human=alice, agent=oauth.agent, server=calendar.server)
    assert delegation.status == Delegation.Status.APPROVED
    answer = introspect(calendar, tokens["access_token"]).json()
    assert answer["active"] is True
    assert answer["sub"] == str(alice.pk)
    assert answer["username"] == "alice"
    assert answer["aud"] == calendar.resource
    assert answer["iss"] == "http://testserver"
    assert answer["client_id"] == oauth.agent.client_id
    assert answer["act"] == {"sub": oauth.agent.client_id}
    assert answer["token_type"] == "Bearer"
    assert answer["exp"] > answer["iat"]


def test_tokens_are_stored_hashed(oauth, calendar):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    stored = AccessToken.objects.get(delegation__isnull=False)
    assert stored.token == ""
    assert tokens["access_token"] not in stored.token_checksum
