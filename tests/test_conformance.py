"""The official MCP conformance suite's authorization-server scenarios, run against the console.

``@modelcontextprotocol/conformance`` (installed by ``scripts/install-conformance``) checks the
RFC 8414 metadata, then walks an authorization-code grant with PKCE for a pre-registered public
client: it prints the authorization URL for a human to open in a browser and waits for the
redirect on a loopback callback. Here the human is alice at a real HTTP client: she signs in on
the login page and allows what the consent page proposes, as she would in a browser.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

import httpx2
import pytest

from policies.models import Delegation
from tests.conftest import ALICE_PASSWORD
from tests.support import free_loopback_port, page_form

SUITE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "conformance"
NODE = SUITE_DIR / "node_modules" / ".bin" / "node"
SUITE = SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and SUITE.exists()),
    reason="the MCP conformance suite is not in .cache/conformance: run scripts/install-conformance",
)

EXPECTED_CHECKS = {
    "authorization-server-metadata",
    "authorization-server-metadata-cimd",
    "authorization-code-grant",
}


def submit(browser: httpx2.Client, page: httpx2.Response, **typed: str) -> httpx2.Response:
    form = page_form(page.text)
    return browser.post(urljoin(str(page.url), form.action), data={**form.fields, **typed})


def shown(page: httpx2.Response) -> str:
    """Where the browser is and what the page says, for assertion messages."""
    return f"{page.url}\n{(page.text.partition('<main>')[2] or page.text)[:2000]}"


def consent_in_browser(authorization_url: str, username: str, password: str) -> None:
    """Open the URL, sign in, allow what the consent page proposes; the last redirect reaches the agent."""
    with httpx2.Client(follow_redirects=True, timeout=30) as browser:
        login = browser.get(authorization_url)
        assert login.url.path == "/accounts/login/", shown(login)
        consent = submit(browser, login, username=username, password=password)
        assert consent.status_code == 200 and 'name="allow"' in consent.text, shown(consent)
        submit(browser, consent, allow="Allow")


def run_suite(issuer: str, client_id: str, resource: str, results: Path, human: Callable[[str], None]) -> str:
    """Run the suite's authorization scenarios; ``human`` is called with the URL it asks a human to open."""
    suite = subprocess.Popen(
        [NODE, SUITE, "authorization", "--url", issuer, "--client-id", client_id, "--resource", resource]
        + ["--port", str(free_loopback_port()), "--output-dir", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, authorization_url = [], None
    try:
        for line in suite.stdout:  # ends early if the suite gives up before asking for a human
            output.append(line)
            if line.startswith(f"{issuer}/oauth/authorize/?"):
                authorization_url = line.strip()
            if authorization_url and line.startswith("Callback server started"):
                human(authorization_url)
                break
        output.append(suite.communicate(timeout=60)[0])
    finally:
        if suite.poll() is None:
            suite.kill()  # it would otherwise wait five minutes for a callback that never comes
            suite.wait()
    return "".join(output)


def test_conformance_suite_passes_the_metadata_and_authorization_code_scenarios(
    live_console, tmp_path, calendar, alice, agent
):
    def alice_consents(authorization_url: str) -> None:
        # The agent's registered redirect is another loopback port: RFC 8252 lets native clients pick.
        consent_in_browser(authorization_url, "alice", ALICE_PASSWORD)

    output = run_suite(live_console, agent.client_id, calendar.resource, tmp_path, alice_consents)

    checks = [check for path in tmp_path.glob("*/checks.json") for check in json.loads(path.read_text())]
    failures = "\n".join(f"{c['id']}: {c['status']} {c.get('errorMessage', '')}" for c in checks)
    assert {c["id"]: c["status"] for c in checks} == dict.fromkeys(EXPECTED_CHECKS, "SUCCESS"), (
        f"{failures}\n--- suite output ---\n{output}"
    )
    # The suite names no scope: alice was offered, and granted, the server's default scopes.
    delegation = Delegation.objects.get(human=alice, agent=agent, server=calendar.server)
    assert delegation.status == Delegation.Status.APPROVED
    assert set(delegation.scope.split()) == {"list_events:read", "create_event:write"}
