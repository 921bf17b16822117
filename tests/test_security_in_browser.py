"""The Content-Security-Policy and staff two-factor authentication in a real browser (Playwright
driving Debian's Chromium against the console serving on loopback).

A security admin signs in on the console's own login page, enrols an authenticator app (reading
the key off the page, as a phone would scan it), keeps the recovery codes, and walks the console:
dashboard (Chart.js), lists, a form, the audit export page and the API docs (Swagger UI). Later
sign-ins ask for a code, then accept a recovery code once. A human consents and opens My agents.
Chromium reports every CSP violation and script error on its console: none may appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User

from console.roles import Role, assign_role
from tests.conftest import REDIRECT_URI, OAuthDriver
from tests.test_pages_in_browser import (  # noqa: F401  (chromium: a fixture)
    agent_callback,
    authorization_url,
    chromium,
    sign_in,
)
from tests.test_two_factor import code_for

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:
    pytest.skip("the playwright package is not installed (pip install playwright)", allow_module_level=True)

PASSWORD = "sam-password-4711"
pytestmark = pytest.mark.timeout(180)


class Window:
    """A fresh browser window (no cookies) that keeps every CSP violation and script error."""

    def __init__(self, browser: Browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route(lambda url: url.startswith(REDIRECT_URI), agent_callback)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"{self.page.url}: {error}"))

    def _console(self, message) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"{self.page.url}: {message.text}")


@pytest.fixture
def window(chromium: Browser, live_console, settings) -> Iterator:  # noqa: F811  (the imported fixture)
    settings.CONSOLE_REQUIRE_2FA = True
    windows: list[Window] = []

    def open_window() -> Window:
        windows.append(Window(chromium))
        return windows[-1]

    yield open_window
    for opened in windows:
        opened.context.close()


@pytest.fixture
def sam(db) -> User:
    user = User.objects.create_user("sam", password=PASSWORD)
    assign_role(user, Role.SECURITY_ADMIN)
    return user


def admin_sign_in(page: Page, console: str) -> None:
    page.goto(f"{console}/admin/")
    page.locator("input[name=username]").fill("sam")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form button[type=submit]").click()


def enter_code(page: Page, code: str, button: str) -> None:
    page.get_by_label(re.compile("Code")).fill(code)
    page.get_by_role("button", name=button).click()


def test_staff_enrol_verify_and_use_a_recovery_code_and_the_console_runs_under_the_csp(
    window, live_console, sam
):
    first = window()
    page = first.page
    admin_sign_in(page, live_console)
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-factor authentication")
    expect(page.locator("figure.qr svg")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text()
    enter_code(page, code_for(secret), "Confirm")
    expect(page.get_by_role("heading", level=1)).to_have_text("Save your recovery codes")
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    page.get_by_role("link", name=re.compile("continue")).click()

    # The console, verified: pages with Alpine.js, Chart.js and Swagger UI.
    expect(page).to_have_url(f"{live_console}/admin/")
    expect(page.locator("canvas").first).to_be_attached()
    for path in ("/admin/policies/agent/", "/admin/policies/mcpserver/add/", "/audit/exports/new/"):
        assert page.goto(f"{live_console}{path}").ok  # waits for "load": Alpine has started
    page.goto(f"{live_console}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("MCP Policy Console API")

    # The next sign-in asks for a code from the app.
    second = window()
    admin_sign_in(second.page, live_console)
    expect(second.page.get_by_role("heading", level=1)).to_have_text("Two-factor authentication")
    enter_code(second.page, code_for(secret, steps_ahead=1), "Verify")
    expect(second.page).to_have_url(f"{live_console}/admin/")

    # A recovery code signs in instead (once: tests/test_two_factor.py refuses it a second time).
    third = window()
    admin_sign_in(third.page, live_console)
    enter_code(third.page, codes[0], "Verify")
    expect(third.page).to_have_url(f"{live_console}/admin/")

    assert first.problems + second.problems + third.problems == []


def test_a_human_consents_and_opens_my_agents_under_the_csp_with_no_second_factor(
    window, live_console, oauth: OAuthDriver, calendar
):
    human = window()
    page = human.page
    params = oauth.authorize_params(calendar.resource, scope="list_events:read")
    page.goto(authorization_url(live_console, params))
    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Allow Research agent to act for you?")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(lambda url: url.startswith(REDIRECT_URI))
    page.goto(f"{live_console}/my-agents/")
    expect(page.get_by_text("Research agent").first).to_be_visible()
    assert human.problems == []
