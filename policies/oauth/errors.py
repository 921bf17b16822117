"""The error responses of the protocol doors: RFC 6749 §5.2 JSON, and error redirects with ``iss``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.http import HttpRequest, JsonResponse
from oauth2_provider.oauth2_backends import _add_iss_to_redirect
from oauth2_provider.settings import oauth2_settings


def oauth_error(error: str, description: str, status: int, **headers: str) -> JsonResponse:
    """``{"error", "error_description"}``, never cached; ``WWW_Authenticate="..."`` sets a header."""
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    response["Cache-Control"] = "no-store"
    return response


def with_issuer_on_error(redirect_to: str, request: HttpRequest) -> str:
    """An authorization error redirect with ``iss`` (RFC 9207 §2); DOT adds it to codes only.

    DOT's helper is private: tests/threats/test_mix_up.py notices if it changes.
    """
    if "error" in parse_qs(urlsplit(redirect_to).query):
        return _add_iss_to_redirect(redirect_to, oauth2_settings.oauth2_authorization_server_issuer(request))
    return redirect_to
