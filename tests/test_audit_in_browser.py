"""The console's export in a real browser: an auditor chooses a format and filters, watches the
progress bar reach done (a real Celery worker runs the job) and downloads the file."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from audit.links import events_url
from audit.models import AuditEvent, AuditExport
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)
from tests.test_pages_in_browser import CHROMIUM_ARGS  # skips this module, as that one, without Chromium

playwright_api = pytest.importorskip("playwright.sync_api")
Browser, Page, expect = playwright_api.Browser, playwright_api.Page, playwright_api.expect

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as patch, playwright_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")  # see tests/test_pages_in_browser.py
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def auditor_page(chromium, live_console, auditor) -> Iterator[Page]:
    """A browser window signed in as the auditor (the session cookie of a real login)."""
    client = Client()
    client.force_login(auditor)
    context = chromium.new_context(accept_downloads=True)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_console,
            }
        ]
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def test_an_auditor_starts_an_export_watches_it_finish_and_downloads_the_file(
    media, celery_worker, trail, auditor_page: Page, live_console, tmp_path
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = auditor_page
    page.goto(f"{live_console}/admin/audit/auditexport/")
    page.get_by_role("link", name="New export").click()

    expect(page.get_by_role("heading", name="Export audit events")).to_be_visible()
    page.get_by_label("Format").select_option("jsonl")
    page.get_by_label("Human").fill("alice")
    page.get_by_label("Outcome").select_option("deny")
    page.screenshot(path=SCREENSHOTS / "audit-export-form.png", full_page=True)
    page.get_by_role("button", name="Start export").click()

    progress = page.get_by_role("progressbar", name="Export progress")
    expect(progress).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#export-status")).to_have_text("done")
    page.screenshot(path=SCREENSHOTS / "audit-export-done.png", full_page=True)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download", exact=True).click()
    path = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(path)

    data = path.read_bytes()
    job = AuditExport.objects.get()
    assert job.status == "done" and job.requested_by.username == "audra"
    assert hashlib.sha256(data).hexdigest() == job.manifest["sha256"]
    expect(page.locator("#export-sha256")).to_have_text(job.manifest["sha256"])
    rows = [json.loads(line) for line in data.decode().splitlines()]
    expected = AuditEvent.objects.filter(human_username="alice", outcome="deny").order_by("id")
    assert [row["id"] for row in rows] == list(expected.values_list("id", flat=True))
    assert [row["reason"] for row in rows] == ["scope_missing"]
    assert path.suffix == ".jsonl"


def test_an_auditor_follows_a_link_to_a_humans_events_and_filters_them_further(
    trail, auditor_page: Page, live_console
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = auditor_page
    page.goto(live_console + events_url(human="alice", outcome="deny"))

    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("scope_missing")
    page.screenshot(path=SCREENSHOTS / "audit-events-filtered.png", full_page=True)
    rows.first.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/admin/audit/auditevent/{trail['events'][1].pk}/change/"))
