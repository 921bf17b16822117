"""
Fetching Client ID Metadata Documents: DOT's SSRF-hardened fetcher, with one switch.

``CIMD_ALLOW_PRIVATE_ADDRESSES`` lets a lab (or the test suite) publish documents on loopback or
a private network. Off, which is the default, DOT's fetcher runs unchanged: public addresses only.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time

import urllib3
from django.conf import settings
from oauth2_provider.cimd import (
    NAT64_PREFIX,
    CIMDError,
    SafeMetadataFetcher,
    _ip_is_public,
    _validate_client_id_url,
)
from oauth2_provider.settings import oauth2_settings


def private_address_allowed(ip: str) -> bool:
    """Whether a fetch may connect to *ip* when CIMD_ALLOW_PRIVATE_ADDRESSES is on.

    Public, private and loopback addresses; link-local never, since cloud metadata services
    (169.254.169.254) live there.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 inside an IPv6 form (::ffff:169.254.169.254, 6to4, NAT64) is judged as that IPv4,
        # as DOT's public-only rule does: ::ffff:0:0/96 counts as "private" and is not link-local.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return private_address_allowed(str(embedded))
        if address.teredo is not None:
            return False  # a tunnel to somewhere else: never a lab's own document host
    return (_ip_is_public(ip) or address.is_private or address.is_loopback) and not address.is_link_local


class PolicyMetadataFetcher(SafeMetadataFetcher):
    def fetch(self, client_id: str) -> tuple[dict, int]:
        if not settings.CIMD_ALLOW_PRIVATE_ADDRESSES:
            return super().fetch(client_id)
        # DOT checks addresses in a module-level function that its fetch calls directly, with no
        # hook to override, so this path repeats its connection loop with our address rule. It
        # keeps what matters: https only, every resolved address checked, connect to that same
        # address (no second lookup), no redirects, one deadline, DOT's size and type checks.
        parsed = _validate_client_id_url(client_id)
        port = parsed.port or 443
        try:
            infos = socket.getaddrinfo(parsed.hostname, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise CIMDError(f"could not resolve client_id host: {exc}") from exc
        ips = [info[4][0] for info in infos]
        refused = [ip for ip in ips if not private_address_allowed(ip)]
        if refused or not ips:
            raise CIMDError(f"client_id host resolves to a refused address ({refused})")

        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        headers = {"Host": parsed.netloc, "Accept": "application/json, application/*+json"}
        ssl_context = ssl.create_default_context()
        deadline = time.monotonic() + oauth2_settings.CIMD_FETCH_TIMEOUT_SECONDS
        last_exc = None
        for ip in ips:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pool = urllib3.HTTPSConnectionPool(
                host=ip,
                port=port,
                timeout=urllib3.Timeout(connect=remaining, read=remaining, total=remaining),
                retries=False,
                maxsize=1,
                ssl_context=ssl_context,
                server_hostname=parsed.hostname,
            )
            try:
                response = pool.urlopen("GET", path, headers=headers, redirect=False, preload_content=False)
                try:
                    return self._read_document(response)
                finally:
                    response.release_conn()
            except urllib3.exceptions.HTTPError as exc:
                last_exc = exc
            finally:
                pool.close()
        raise CIMDError(f"could not fetch client_id document: {last_exc}")
