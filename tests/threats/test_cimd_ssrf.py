"""CIMD SSRF (MCP security best practices, "Server-Side Request Forgery"; CIMD draft §6): an
agent's ``client_id`` is a URL the console fetches, so an attacker names one that resolves to a
private, loopback, link-local (the cloud metadata service 169.254.169.254) or IPv6-local address,
hides such an address inside an IPv6 form, or answers DNS with a public address first and a
private one when the connection is made (DNS rebinding). Each is refused through the real
authorization endpoint: no connection to the target, no agent, no ``agent.registered`` event.

DNS is the one part outside our control: a resolver stands in for it (``socket.getaddrinfo`` for
the attacker's names only), and every connection attempt the fetcher makes is recorded instead of
leaving the machine."""

from __future__ import annotations

import socket

import pytest
import urllib3
from django.core.cache import cache

from policies.models import Agent
from tests.test_registration import authorize_as, metadata_host, refused_page  # noqa: F401  (a fixture)
from tests.threats.support import events

HOST = "agents.attacker.test"
PUBLIC = "93.184.215.14"

LOCAL_TARGETS = [
    pytest.param("10.0.0.5", id="private-10"),
    pytest.param("192.168.1.1", id="private-192.168"),
    pytest.param("172.16.0.1", id="private-172.16"),
    pytest.param("127.0.0.1", id="loopback"),
    pytest.param("0.0.0.0", id="unspecified"),
    pytest.param("100.64.0.1", id="cgnat"),
    pytest.param("169.254.169.254", id="link-local-cloud-metadata"),
    pytest.param("::1", id="ipv6-loopback"),
    pytest.param("fe80::1", id="ipv6-link-local"),
    pytest.param("fc00::1", id="ipv6-unique-local"),
    pytest.param("::ffff:169.254.169.254", id="ipv4-mapped-metadata"),
    pytest.param("64:ff9b::a9fe:a9fe", id="nat64-metadata"),
    pytest.param("2002:a9fe:a9fe::1", id="6to4-metadata"),
]


class Resolver:
    """DNS for the attacker's host: each lookup answers the next list of addresses (the last repeats)."""

    def __init__(self, monkeypatch, *answers: list[str]):
        self.answers, self.lookups = list(answers), 0
        real = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):
            if host != HOST:
                return real(host, port, *args, **kwargs)
            ips = self.answers[min(self.lookups, len(self.answers) - 1)]
            self.lookups += 1
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in ips
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, str]]:
    """(address, TLS server name) of every connection the fetcher attempts; none leaves the machine."""
    attempts: list[tuple[str, str]] = []

    def urlopen(pool, *args, **kwargs):
        attempts.append(
            (pool.host, pool.conn_kw.get("server_hostname") or getattr(pool, "server_hostname", ""))
        )
        raise urllib3.exceptions.NewConnectionError(None, "recorded, not connected")

    monkeypatch.setattr(urllib3.HTTPSConnectionPool, "urlopen", urlopen)
    cache.clear()  # DOT backs off a URL whose fetch failed
    return attempts


def url(path: str = "agent.json") -> str:
    return f"https://{HOST}/{path}"


def refused_without_agent(oauth, calendar, client_id: str) -> bool:
    page = authorize_as(oauth, client_id, calendar.resource)
    return (
        refused_page(page)
        and not Agent.objects.filter(client_id=client_id).exists()
        and not [e for e in events("agent.registered") if e.agent_client_id == client_id]
    )


@pytest.mark.parametrize("address", LOCAL_TARGETS)
def test_a_document_on_a_local_address_is_never_fetched(monkeypatch, connections, oauth, calendar, address):
    Resolver(monkeypatch, [address])

    assert refused_without_agent(oauth, calendar, url())
    assert connections == []


@pytest.mark.parametrize(
    "address",
    [
        p
        for p in LOCAL_TARGETS
        if p.id
        in {
            "link-local-cloud-metadata",
            "ipv6-link-local",
            "ipv4-mapped-metadata",
            "nat64-metadata",
            "6to4-metadata",
        }
    ],
)
def test_link_local_stays_refused_when_a_lab_allows_private_addresses(
    settings, monkeypatch, connections, oauth, calendar, address
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    Resolver(monkeypatch, [address])

    assert refused_without_agent(oauth, calendar, url())
    assert connections == []


def test_a_name_resolving_to_public_and_private_addresses_is_refused_whole(
    monkeypatch, connections, oauth, calendar
):
    Resolver(monkeypatch, [PUBLIC, "10.0.0.5"])

    assert refused_without_agent(oauth, calendar, url())
    assert connections == []


@pytest.mark.parametrize("allow_private", [False, True], ids=["default", "lab"])
def test_dns_rebinding_cannot_move_the_connection_to_a_private_address(
    settings, monkeypatch, connections, oauth, calendar, allow_private
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = allow_private
    # Public when checked, the metadata service for any later lookup (a TTL-0 rebinding name).
    resolver = Resolver(monkeypatch, [PUBLIC], ["169.254.169.254"])

    assert refused_without_agent(oauth, calendar, url())  # the recorded connection fails

    # Resolved once, and the connection went to the address that was checked, under the real name.
    assert resolver.lookups == 1
    assert [address for address, _ in connections] == [PUBLIC]


def test_a_document_on_loopback_is_never_fetched_by_default_even_when_really_served(
    settings,
    metadata_host,  # noqa: F811  (the fixture imported above)
    oauth,
    calendar,
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = False
    client_id = metadata_host.publish()

    assert refused_without_agent(oauth, calendar, client_id)
    assert metadata_host.requested == []


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("http://127.0.0.1/agent.json", id="plain-http"),
        pytest.param(f"https://user:pw@{HOST}/agent.json", id="userinfo"),
        pytest.param(f"https://{HOST}/a/../agent.json", id="dot-segments"),
        pytest.param(f"https://{HOST}:99999/agent.json", id="bad-port"),
        pytest.param(f"https://{HOST}/agent.json#fragment", id="fragment"),
    ],
)
def test_urls_that_are_not_plain_https_documents_are_refused_before_any_lookup(
    settings, monkeypatch, connections, oauth, calendar, client_id
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    resolver = Resolver(monkeypatch, ["127.0.0.1"])

    assert refused_without_agent(oauth, calendar, client_id)
    assert resolver.lookups == 0
    assert connections == []
