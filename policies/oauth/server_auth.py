"""How an MCP server proves who it is, at introspection and at the audit event API: its own
client id and secret, by HTTP Basic (RFC 6749 §2.3.1) or client_secret_post."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from django.http import HttpRequest

from policies.models import McpServer


def _basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def server_credentials(request: HttpRequest) -> tuple[str, str] | None:
    """The client id and secret an MCP server presents (HTTP Basic or client_secret_post)."""
    credentials = _basic_credentials(request)
    if credentials is None and "HTTP_AUTHORIZATION" not in request.META:
        client_id, secret = request.POST.get("client_id"), request.POST.get("client_secret")
        credentials = (client_id, secret) if client_id and secret else None
    if credentials is None or "\x00" in credentials[0]:
        return None
    return credentials


def authenticate_server(request: HttpRequest) -> McpServer | None:
    """The MCP server calling, by HTTP Basic or client_secret_post credentials; None if wrong."""
    credentials = server_credentials(request)
    if credentials is None:
        return None
    server = McpServer.objects.filter(client_id=credentials[0], active=True).first()
    if server is None or not server.check_secret(credentials[1]):
        return None
    return server
