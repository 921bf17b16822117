"""In a real browser, the progress page of an export whose file expired says so instead of offering
the download (the page's status poll agrees with the page as rendered)."""

from __future__ import annotations

import pytest

from tests.test_audit_export_expiry import expire, finished_export  # noqa: F401  (fixture)
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)
from tests.test_audit_in_browser import SCREENSHOTS, Page, auditor_page, chromium, expect  # noqa: F401

pytestmark = pytest.mark.timeout(180)


def test_the_progress_page_of_an_expired_export_says_so_and_offers_no_download(
    finished_export,  # noqa: F811  (the fixtures imported above)
    auditor_page: Page,  # noqa: F811
    live_console,
):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    job = finished_export(25)
    page = auditor_page
    page.goto(f"{live_console}/audit/exports/{job.pk}/")
    expect(page.get_by_role("link", name="Download", exact=True)).to_be_visible()

    expire()
    page.reload()

    expect(page.locator("#export-status")).to_have_text("done")  # the poll answered
    expect(page.get_by_role("status")).to_contain_text("The export file has expired")
    expect(page.locator("#export-expired-sha256")).to_have_text(job.manifest["sha256"])
    expect(page.get_by_role("link", name="Download", exact=True)).to_be_hidden()
    page.screenshot(path=SCREENSHOTS / "audit-export-expired.png", full_page=True)
