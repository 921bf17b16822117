"""The pages of the OAuth flow in a real browser: Playwright driving Debian's Chromium against the
console really serving on loopback. A human opens the authorization URL an agent gave her, signs
in, reviews the consent page and answers; the browser's last navigation is the redirect to the
agent's loopback callback, where nothing listens, so the test receives it instead.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from policies.models import Delegation, Tool, ToolAction
from tests.conftest import ALICE_PASSWORD, REDIRECT_URI, OAuthDriver

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (pip install playwright)", allow_module_level=True)

# As the machine's notes advise: no sandbox as root, and no background traffic to the outside.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOTH_CALENDAR_SCOPES = "list_events:read create_event:write"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    # Playwright's sync API leaves its own event loop marked running in this thread while it lives,
    # so Django would refuse the tests' ORM calls as if made from async code; they are plain
    # synchronous calls, hence the switch. Module scope: the loop and the switch are gone before
    # other modules call asyncio.run().
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_console) -> Iterator[Page]:
    """A fresh browser window (no cookies) whose redirects to the agent are answered by the test."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.route(lambda url: url.startswith(REDIRECT_URI), agent_callback)
    yield page
    context.close()


def agent_callback(route: Route) -> None:
    route.fulfill(status=200, content_type="text/plain", body="The agent received the redirect.")


@pytest.fixture
def framing_site() -> Iterator[FramingSite]:
    site = FramingSite(("127.0.0.1", 0), FramingPage)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site
    site.shutdown()
    site.server_close()
    thread.join()


class FramingSite(ThreadingHTTPServer):
    """Another origin on loopback whose one page frames ``target``, as a clickjacking page would."""

    target = "about:blank"

    @property
    def url(self) -> str:
        # localhost, as the console's live URL: same site, so the session cookie goes into the frame.
        return f"http://localhost:{self.server_port}/"


class FramingPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>Somewhere else</title>"
            f'<iframe title="framed" src="{html.escape(self.server.target)}" width="600" height="600">'
            "</iframe>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def authorization_url(console: str, params: dict) -> str:
    return f"{console}/oauth/authorize/?{urlencode(params)}"


def sign_in(page: Page, password: str = ALICE_PASSWORD) -> None:
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def open_consent_page(page: Page, console: str, params: dict) -> None:
    """Alice opens the agent's authorization URL, is asked to sign in, and does."""
    page.goto(authorization_url(console, params))
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))
    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Allow Research agent to act for you?")


def fact(page: Page, term: str) -> Locator:
    """What the consent page's summary says against ``term``."""
    return page.locator(f'dl dt:text-is("{term}") + dd')


def assert_legible(button: Locator) -> None:
    colours = button.evaluate("b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]")
    assert colours[0] != colours[1], f"{button}: text and background are both {colours[0]}"


def scope_box(page: Page, scope: str) -> Locator:
    return page.get_by_role("checkbox", name=re.compile(re.escape(scope.replace(":", " — "))))


def answer(page: Page, button: str) -> dict[str, str]:
    """Click Allow or Deny; returns the query of the redirect that reached the agent."""
    page.get_by_role("button", name=button).click()
    page.wait_for_url(lambda url: url.startswith(REDIRECT_URI))
    return {name: values[0] for name, values in parse_qs(urlsplit(page.url).query).items()}


def test_a_human_signs_in_unticks_a_scope_and_the_agent_gets_a_code_for_the_rest(
    page, live_console, oauth: OAuthDriver, calendar, tmp_path
):
    params = oauth.authorize_params(calendar.resource, scope=BOTH_CALENDAR_SCOPES)

    open_consent_page(page, live_console, params)

    # The page names who asks (the heading), on which server, and where the answer goes.
    expect(fact(page, "MCP server")).to_have_text("calendar (https://calendar.example.com/mcp)")
    expect(fact(page, "Sends you back to")).to_have_text("127.0.0.1:53682")
    expect(fact(page, "Signed in as")).to_have_text("alice")
    expect(scope_box(page, "list_events:read")).to_be_checked()
    expect(scope_box(page, "create_event:write")).to_be_checked()
    assert_legible(page.get_by_role("button", name="Allow"))
    assert_legible(page.get_by_role("button", name="Deny"))
    page.screenshot(path=tmp_path / "consent.png", full_page=True)

    scope_box(page, "create_event:write").uncheck()
    redirect = answer(page, "Allow")

    assert redirect.keys() == {"code", "state", "iss"}
    assert redirect["state"] == params["state"]
    assert redirect["iss"] == live_console
    token = oauth.exchange(redirect["code"], calendar.resource)
    assert token.status_code == 200, token.content
    assert token.json()["scope"] == "list_events:read"


def test_a_scope_the_policy_forbids_is_shown_disabled_and_cannot_be_ticked(
    page, live_console, oauth: OAuthDriver, calendar
):
    delete = Tool.objects.create(server=calendar.server, name="delete_event", risk="high")
    ToolAction.objects.create(tool=delete, name="write")  # in no policy of alice's groups
    params = oauth.authorize_params(calendar.resource, scope=f"{BOTH_CALENDAR_SCOPES} delete_event:write")

    open_consent_page(page, live_console, params)

    forbidden = scope_box(page, "delete_event:write")
    expect(forbidden).to_be_disabled()
    expect(forbidden).not_to_be_checked()
    forbidden.click(force=True)  # a click on the box itself, past Playwright's own checks
    expect(forbidden).not_to_be_checked()
    expect(page.get_by_role("listitem").filter(has=forbidden)).to_contain_text(
        "Your policy does not let you delegate this."
    )
    redirect = answer(page, "Allow")

    token = oauth.exchange(redirect["code"], calendar.resource)
    assert token.status_code == 200, token.content
    assert set(token.json()["scope"].split()) == {"list_events:read", "create_event:write"}


def test_deny_sends_access_denied_to_the_agent_and_delegates_nothing(
    page, live_console, oauth: OAuthDriver, calendar, alice
):
    params = oauth.authorize_params(calendar.resource, scope=BOTH_CALENDAR_SCOPES)

    open_consent_page(page, live_console, params)
    redirect = answer(page, "Deny")

    assert redirect["error"] == "access_denied"
    assert redirect["state"] == params["state"]
    assert "code" not in redirect
    assert not Delegation.objects.filter(human=alice).exists()


def test_the_consent_page_refuses_to_render_inside_another_sites_frame(
    page, live_console, oauth: OAuthDriver, calendar, framing_site
):
    params = oauth.authorize_params(calendar.resource, scope=BOTH_CALENDAR_SCOPES)
    open_consent_page(page, live_console, params)  # signed in: the frame would get the real page
    framing_site.target = authorization_url(live_console, params)

    with page.expect_response(lambda response: "/oauth/authorize/" in response.url) as framed:
        page.goto(framing_site.url)

    # The console did serve the consent page to the frame, and told the browser not to show it.
    assert framed.value.status == 200
    assert framed.value.header_value("X-Frame-Options") == "DENY"
    frame = page.frame_locator("iframe")
    expect(frame.locator("body")).to_be_attached()  # the frame has settled (on the browser's error page)
    expect(frame.get_by_role("button", name="Allow")).to_have_count(0)
    expect(frame.get_by_text("Research agent")).to_have_count(0)


def test_a_wrong_password_shows_the_error_on_the_login_page(page, live_console, oauth: OAuthDriver, calendar):
    page.goto(authorization_url(live_console, oauth.authorize_params(calendar.resource)))

    sign_in(page, password="not-alices-password")

    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_role("alert")).to_contain_text("Your username and password did not match.")
    expect(page.get_by_label("Username")).to_have_value("alice")
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("Password")).to_be_focused()
    assert_legible(page.get_by_role("button", name="Sign in"))
