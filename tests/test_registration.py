"""Agents register themselves: Dynamic Client Registration (RFC 7591) and Client ID Metadata
Documents, fetched over real https from a server on loopback that a test CA vouches for. Hostile
metadata, changed clients and SSRF are in tests/threats/ (which reuses the helpers here)."""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import trustme
from django.test import Client

from audit.models import AuditEvent
from policies.models import Agent, PolicySetting
from tests.conftest import OAuthDriver

SDK_REDIRECT = "http://localhost:43117/callback"
FOREIGN_HTTP_REDIRECT = "http://evil.example.com/callback"
DOCUMENT_REDIRECT = "http://localhost:7777/callback"


def sdk_registration(**fields) -> dict:
    """The registration body the official MCP SDK client sends (see INTEROP.md)."""
    return {
        "redirect_uris": [SDK_REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "mcp-sdk-client",
        "application_type": "native",
        "scope": "list_events:read create_event:write",
    } | fields


def register(body: dict | list | str):
    payload = body if isinstance(body, str) else json.dumps(body)
    return Client().post("/oauth/register/", payload, content_type="application/json")


def registered_event(agent: Agent) -> AuditEvent:
    return AuditEvent.objects.get(event_type="agent.registered", agent_client_id=agent.client_id)


def refused_page(response) -> bool:
    """The authorization endpoint's error page: no consent form, nothing to approve."""
    return (
        response.status_code == 400
        and b"cannot continue" in response.content
        and "form" not in response.context
    )


# --- Dynamic Client Registration ---------------------------------------------------------------


def test_dcr_as_the_mcp_sdk_does_it_registers_an_active_public_agent(db):
    response = register(sdk_registration())

    assert response.status_code == 201
    body = response.json()
    assert body["token_endpoint_auth_method"] == "none"
    assert body["redirect_uris"] == [SDK_REDIRECT]
    assert "client_secret" not in body
    agent = Agent.objects.get(client_id=body["client_id"])
    assert agent.client_type == Agent.CLIENT_PUBLIC
    assert agent.registration_source == Agent.RegistrationSource.DCR
    assert agent.status == Agent.Status.ACTIVE
    assert agent.name == "mcp-sdk-client"
    assert registered_event(agent).detail == {"source": "dcr", "status": "active"}


def test_dcr_agent_waits_for_an_admin_when_registration_requires_approval(browser, calendar):
    PolicySetting.objects.create(key=PolicySetting.AGENT_REGISTRATION, value="require_approval")

    response = register(sdk_registration())

    assert response.status_code == 201
    agent = Agent.objects.get(client_id=response.json()["client_id"])
    assert agent.status == Agent.Status.PENDING
    assert registered_event(agent).detail == {"source": "dcr", "status": "pending"}
    params = OAuthDriver(browser, agent).authorize_params(
        calendar.resource, "list_events:read", redirect_uri=SDK_REDIRECT
    )
    refused = browser.get("/oauth/authorize/", params)
    assert refused_page(refused)
    assert b"waiting for an administrator" in refused.content

    agent.status = Agent.Status.ACTIVE
    agent.save()

    page = browser.get("/oauth/authorize/", params)
    assert page.status_code == 200
    assert page.context["application"] == agent
    assert [row["scope"] for row in page.context["scope_rows"]] == ["list_events:read"]


# --- Client ID Metadata Documents ----------------------------------------------------------------


@dataclass
class MetadataHost:
    """An https server on loopback serving client metadata documents; it notes each path asked for."""

    port: int
    documents: dict[str, bytes] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)

    def publish(self, **fields) -> str:
        """Publish an agent's document (with *fields* changed) at a fresh URL; return the URL.

        Fresh, because DOT backs off a URL whose fetch failed, in the shared cache.
        """
        url = f"https://localhost:{self.port}/agents/{secrets.token_hex(8)}.json"
        document = {
            "client_id": url,
            "client_name": "Notes agent",
            "redirect_uris": [DOCUMENT_REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        } | fields
        self.documents[urlsplit(url).path] = json.dumps(document).encode()
        return url


@pytest.fixture
def metadata_host(tmp_path, monkeypatch):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # The fetcher builds its TLS context with ssl.create_default_context(), which reads this.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DocumentHandler)
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    host = MetadataHost(port=httpd.server_address[1])
    httpd.host = host
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield host
    httpd.shutdown()
    httpd.server_close()


class DocumentHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        host: MetadataHost = self.server.host
        host.requested.append(self.path)
        body = host.documents.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def authorize_as(oauth: OAuthDriver, document_url: str, resource: str):
    """The agent identified by *document_url* sends the human's browser to the consent page."""
    params = oauth.authorize_params(
        resource, "list_events:read", client_id=document_url, redirect_uri=DOCUMENT_REDIRECT
    )
    return oauth.browser.get("/oauth/authorize/", params)


def test_cimd_document_is_fetched_when_private_addresses_are_allowed_and_consent_shows_its_redirect_host(
    settings, metadata_host, oauth, calendar
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    url = metadata_host.publish()

    page = authorize_as(oauth, url, calendar.resource)

    assert page.status_code == 200
    assert page.context["redirect_host"] == "localhost:7777"
    assert b"localhost:7777" in page.content
    assert b"Notes agent" in page.content
    agent = Agent.objects.get(client_id=url)
    assert page.context["application"] == agent
    assert agent.client_type == Agent.CLIENT_PUBLIC
    assert agent.registration_source == Agent.RegistrationSource.CIMD
    assert agent.status == Agent.Status.ACTIVE
    assert registered_event(agent).detail == {"source": "cimd", "status": "active"}


def test_cimd_agent_waits_for_an_admin_when_registration_requires_approval(
    settings, metadata_host, oauth, calendar
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    PolicySetting.objects.create(key=PolicySetting.AGENT_REGISTRATION, value="require_approval")
    url = metadata_host.publish()

    page = authorize_as(oauth, url, calendar.resource)

    assert refused_page(page)
    agent = Agent.objects.get(client_id=url)
    assert agent.status == Agent.Status.PENDING
    assert registered_event(agent).detail == {"source": "cimd", "status": "pending"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"client_id": "https://localhost/someone-else.json"}, id="client-id-differs-from-url"),
        pytest.param({"padding": "x" * (16 * 1024)}, id="oversized"),
        pytest.param({"redirect_uris": [FOREIGN_HTTP_REDIRECT]}, id="http-non-loopback-redirect"),
    ],
)
def test_cimd_document_that_breaks_the_rules_leaves_the_agent_unknown(
    settings, metadata_host, oauth, calendar, fields
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    url = metadata_host.publish(**fields)

    page = authorize_as(oauth, url, calendar.resource)

    assert metadata_host.requested == [urlsplit(url).path]
    assert refused_page(page)
    assert not Agent.objects.filter(client_id=url).exists()
    assert not AuditEvent.objects.filter(event_type="agent.registered", agent_client_id=url).exists()
