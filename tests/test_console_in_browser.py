"""
The console's pages in a real browser (Playwright driving Debian's Chromium against the console
serving on loopback): a security admin imports a live MCP server's tools; a human consents to a
scope that needs an approver, waits, and the authorization completes once an approver approves;
an admin suspends one agent while another keeps working; a human revokes an agent from "My
agents". Each step leaves a screenshot in artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from console.roles import Role, assign_role
from policies.models import Agent, Delegation, DelegationPolicy, Tool
from tests.conftest import REDIRECT_URI, OAuthDriver, introspect, make_server
from tests.live_mcp import serving
from tests.test_pages_in_browser import (  # noqa: F401  (chromium: a fixture)
    agent_callback,
    authorization_url,
    chromium,
    scope_box,
    sign_in,
)

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:
    pytest.skip("the playwright package is not installed (pip install playwright)", allow_module_level=True)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
STAFF_PASSWORD = "staff-password-123"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def window(chromium: Browser, live_console) -> Iterator:  # noqa: F811  (the imported fixture)
    """Opens fresh browser windows (no shared cookies), one per person."""
    contexts = []

    def open_window() -> Page:
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        context.route(lambda url: url.startswith(REDIRECT_URI), agent_callback)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_window
    for context in contexts:
        context.close()


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, name: str):
        self.name, self.count = name, 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, page: Page, step: str) -> None:
        self.count += 1
        page.wait_for_load_state("load")
        page.screenshot(path=SCREENSHOTS / f"{self.name}-{self.count:02d}-{step}.png", full_page=True)


@pytest.fixture
def shot(request) -> Shots:
    return Shots(request.node.name)


def staff(username: str, role: Role) -> User:
    user = User.objects.create_user(username, password=STAFF_PASSWORD)
    assign_role(user, role)
    return user


def admin_sign_in(page: Page, console: str, username: str) -> None:
    page.goto(f"{console}/admin/login/?next=/admin/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(STAFF_PASSWORD)
    page.locator("form button[type=submit]").click()
    expect(page.locator("#dashboard")).to_be_visible()


def list_notes() -> list[str]:
    """List the notes."""
    return []


def delete_note(note_id: int) -> str:
    """Delete a note."""
    return "deleted"


def share_note(note_id: int, email: str) -> str:
    """Share a note with someone."""
    return "shared"


def test_an_admin_imports_a_servers_tools_and_sees_what_changed(window, live_console, shot):
    staff("secadmin", Role.SECURITY_ADMIN)
    mcp = MCPServer("notes")
    mcp.add_tool(list_notes, annotations=ToolAnnotations(read_only_hint=True))
    mcp.add_tool(delete_note, annotations=ToolAnnotations(destructive_hint=True))
    with serving(mcp) as resource:
        notes = make_server("notes", resource, {}).server
        page = window()
        admin_sign_in(page, live_console, "secadmin")
        shot(page, "dashboard")

        page.get_by_role("link", name="MCP servers").first.click()
        page.get_by_role("link", name="notes", exact=True).click()
        page.get_by_role("link", name="Import tools").click()
        expect(page.get_by_text("Never imported.")).to_be_visible()
        shot(page, "import-page")
        page.get_by_role("button", name="Import tools").click()

        expect(page.get_by_test_id("added")).to_have_text("list_notes, delete_note")
        expect(page.get_by_test_id("removed")).to_have_text("—")
        shot(page, "first-import")
        assert Tool.objects.get(server=notes, name="delete_note").risk == "high"

        mcp.remove_tool("delete_note")
        mcp.add_tool(share_note)
        page.get_by_role("button", name="Import tools").click()

        expect(page.get_by_test_id("added")).to_have_text("share_note")
        expect(page.get_by_test_id("removed")).to_have_text("delete_note")
        expect(page.get_by_test_id("unchanged")).to_have_text("list_notes")
        shot(page, "second-import")
    assert not Tool.objects.get(server=notes, name="delete_note").available


def test_a_human_waits_for_an_approver_and_the_authorization_completes_after_approval(
    window, live_console, oauth: OAuthDriver, calendar, alice, shot
):
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")
    staff("approver", Role.APPROVER)
    params = oauth.authorize_params(calendar.resource, scope="list_events:read create_event:write")

    human = window()
    human.goto(authorization_url(live_console, params))
    sign_in(human)
    expect(scope_box(human, "create_event:write")).to_be_checked()
    shot(human, "consent")
    human.get_by_role("button", name="Allow").click()
    expect(human.get_by_role("heading", level=1)).to_have_text("Waiting for an approver")
    shot(human, "waiting")
    delegation = Delegation.objects.get(human=alice, status="pending")

    approver = window()
    admin_sign_in(approver, live_console, "approver")
    expect(approver.get_by_test_id("pending-delegations")).to_have_text("1")
    shot(approver, "approver-dashboard")
    approver.get_by_role("link", name="Review").click()
    expect(approver.get_by_test_id("status")).to_have_text("pending")
    approver.get_by_label("Comment").fill("Fine for the team calendar.")
    shot(approver, "decision")
    # The waiting page looks again by itself and, once approved, sends the browser on to the
    # agent's redirect URI. (Playwright's route did not catch that hop, submitted by the page's own
    # script, so the test watches for the request: nothing listens there, as with a closed agent.)
    with human.expect_request(lambda request: request.url.startswith(REDIRECT_URI), timeout=30_000) as landed:
        approver.get_by_role("button", name="Approve").click()
        expect(approver.locator("body")).to_contain_text("Approved")
        shot(approver, "approved")
    redirect = {key: values[0] for key, values in parse_qs(urlsplit(landed.value.url).query).items()}
    assert redirect["state"] == params["state"]
    token = oauth.exchange(redirect["code"], calendar.resource)
    assert token.status_code == 200, token.content
    assert set(token.json()["scope"].split()) == {"list_events:read", "create_event:write"}
    delegation.refresh_from_db()
    assert (delegation.status, delegation.decision_comment) == ("approved", "Fine for the team calendar.")


def test_an_admin_suspends_one_agent_and_another_agent_of_the_same_human_keeps_working(
    window, live_console, oauth: OAuthDriver, calendar, alice, shot
):
    staff("secadmin", Role.SECURITY_ADMIN)
    other = Agent.objects.create(
        name="Scheduling agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
    )
    suspended_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    other_token = OAuthDriver(oauth.browser, other).tokens(calendar.resource, "list_events:read")[
        "access_token"
    ]

    page = window()
    admin_sign_in(page, live_console, "secadmin")
    page.get_by_role("link", name="Agents").first.click()
    page.get_by_role("link", name="Research agent").click()
    shot(page, "agent")
    page.get_by_role("link", name="Suspend").click()
    shot(page, "confirm-suspend")
    page.get_by_role("button", name="Suspend").click()
    expect(page.locator("body")).to_contain_text("Suspended: Research agent.")
    shot(page, "suspended")

    assert introspect(calendar, suspended_token).json() == {"active": False}
    assert introspect(calendar, other_token).json()["active"] is True


def test_a_human_revokes_an_agent_from_my_agents(
    window, live_console, oauth: OAuthDriver, calendar, mail, shot
):
    calendar_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]

    page = window()
    page.goto(f"{live_console}/my-agents/")
    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("My agents")
    expect(page.get_by_role("row")).to_have_count(3)  # the header and two delegations
    shot(page, "my-agents")

    page.get_by_role("link", name="Revoke Research agent on calendar").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Revoke Research agent?")
    shot(page, "confirm")
    page.get_by_role("button", name="Revoke").click()

    expect(page.get_by_role("status")).to_contain_text("can no longer act for you on calendar")
    expect(page.get_by_role("row")).to_have_count(2)
    expect(page.get_by_role("row", name=re.compile("mail"))).to_be_visible()
    shot(page, "revoked")
    assert introspect(calendar, calendar_token).json() == {"active": False}
    assert introspect(mail, mail_token).json()["active"] is True
