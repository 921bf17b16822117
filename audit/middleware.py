"""Request metadata for audit events: the client's address, its user agent and a correlation id.

``RequestMetadataMiddleware`` reads them once per request into a context variable and echoes the
correlation id in ``X-Request-ID``; ``audit.events.record`` picks them up, so every event of one
request shares the id even where the caller passes no request.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a caller's X-Request-ID: short, printable, no separators that could forge
# columns or lines in an export. Anything else is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass(frozen=True)
class RequestMetadata:
    correlation_id: str
    client_ip: str | None
    user_agent: str


current: ContextVar[RequestMetadata | None] = ContextVar("audit_request_metadata", default=None)


@cache
def _trusted_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in proxies)


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the right-most X-Forwarded-For hop not in TRUSTED_PROXIES.

    Only a peer inside a trusted network may speak for the client; each trusted proxy appends the
    address it saw, so walking from the right, the first untrusted address is the client. A
    malformed hop ends the walk at the last address we could trust.
    """
    networks = _trusted_networks(tuple(settings.AUDIT_TRUSTED_PROXIES))
    address = _parse_ip(request.META.get("REMOTE_ADDR", ""))
    if address is None:
        return None

    def trusted(ip) -> bool:
        return any(ip in network for network in networks)

    if not trusted(address):
        return str(address)
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        ip = _parse_ip(hop)
        if ip is None:
            break
        address = ip
        if not trusted(ip):
            break
    return str(address)


def correlation_id(request: HttpRequest) -> str:
    """The caller's X-Request-ID when it is well formed, else a new one."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def metadata_of(request: HttpRequest) -> RequestMetadata:
    found = getattr(request, "audit_metadata", None)
    if found is not None:
        return found
    return RequestMetadata(
        correlation_id=correlation_id(request),
        client_ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:300],
    )


class RequestMetadataMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        metadata = metadata_of(request)
        request.audit_metadata = metadata
        token = current.set(metadata)
        try:
            response = self.get_response(request)
        finally:
            current.reset(token)
        response[REQUEST_ID_HEADER] = metadata.correlation_id
        return response
