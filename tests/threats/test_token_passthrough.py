"""Token passthrough and the confused deputy (MCP security best practices): a token the console
issued for MCP server A, replayed by A (or anyone) at MCP server B. The console tells B the token
is inactive (and records why); ``mcp_console_auth`` in front of B's real SDK app answers 401 and
never runs the tool. (The verifier's own audience check, for a server misconfigured with another
resource, is tests/test_mcp_console_auth.py's.)"""

from tests.conftest import introspect
from tests.test_mcp_console_auth import calendar_app, post_mcp, tool_call
from tests.threats.support import events


def test_introspection_by_another_server_says_inactive_and_records_why(oauth, calendar, mail):
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]

    answer = introspect(calendar, mail_token, tool="list_events", action="read")

    assert answer.json() == {"active": False}
    event = events("tool_call.decision")[-1]
    assert (event.outcome, event.reason, event.server_name, event.human_username) == (
        "deny",
        "wrong_audience",
        "calendar",
        "alice",
    )
    assert introspect(mail, mail_token).json()["active"] is True  # still good where it belongs


def test_the_mcp_server_guard_refuses_a_token_for_another_server(live_console, oauth, calendar, mail):
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]

    response = post_mcp(calendar_app(live_console, calendar), tool_call("list_events"), mail_token)

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert [(e.outcome, e.reason) for e in events("tool_call.decision")] == [("deny", "wrong_audience")]
