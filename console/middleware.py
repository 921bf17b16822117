"""Requests carrying text PostgreSQL cannot store are refused before any view runs.

PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate (which a JSON ``\\ud800``
escape produces): either would otherwise reach a query and end as a 500. Protocol and API callers
get their JSON error shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from policies.oauth.errors import oauth_error

FORM = "application/x-www-form-urlencoded"
JSON_PREFIXES = ("/oauth/", "/api/", "/.well-known/")
# The consent pages are for a person in a browser, although they live under /oauth/.
PAGES_UNDER_JSON_PREFIXES = ("/oauth/authorize/",)


def speaks_json(path: str) -> bool:
    """Whether the caller at ``path`` is a program that expects errors as JSON, not a person."""
    return path.startswith(JSON_PREFIXES) and not path.startswith(PAGES_UNDER_JSON_PREFIXES)


def _has_nul(encoded: str | bytes) -> bool:
    raw = encoded.encode("latin-1", "replace") if isinstance(encoded, str) else encoded
    return b"\x00" in unquote_to_bytes(raw)


def _unstorable_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_unstorable(body: bytes) -> bool:
    """A JSON body whose strings hold NUL or a lone surrogate; malformed JSON is the view's to refuse."""
    try:
        pending = [json.loads(body)]
    except (ValueError, RecursionError):
        return False
    while pending:  # iteratively: deeply nested JSON must not exhaust the stack
        value = pending.pop()
        if isinstance(value, str):
            if _unstorable_text(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class RejectUnstorableTextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._unstorable(request):
            message = "The request contains a NUL character or text that is not valid Unicode."
            if speaks_json(request.path):
                return oauth_error("invalid_request", message, 400)
            return HttpResponseBadRequest(message)
        return self.get_response(request)

    @staticmethod
    def _unstorable(request: HttpRequest) -> bool:
        if "\x00" in request.path or _has_nul(request.META.get("QUERY_STRING", "")):
            return True
        if request.method not in ("POST", "PUT", "PATCH"):
            return False
        try:
            if request.content_type == FORM:
                return _has_nul(request.body)
            if request.content_type == "application/json":
                return _json_unstorable(request.body)
        except RequestDataTooBig:
            return False  # the view answers with its own size error
        return False
