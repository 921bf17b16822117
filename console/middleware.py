"""Requests carrying a NUL character are refused before any view runs.

PostgreSQL text cannot hold NUL: a NUL in a path, a query string or a form field would otherwise
reach a query and end as a 500. Protocol and API callers get their JSON error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

FORM = "application/x-www-form-urlencoded"
JSON_PREFIXES = ("/oauth/", "/api/", "/.well-known/")


def _has_nul(encoded: str | bytes) -> bool:
    raw = encoded.encode("latin-1", "replace") if isinstance(encoded, str) else encoded
    return b"\x00" in unquote_to_bytes(raw)


class RejectNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._carries_nul(request):
            message = "The request contains a NUL character."
            if request.path.startswith(JSON_PREFIXES):
                return JsonResponse({"error": "invalid_request", "error_description": message}, status=400)
            return HttpResponseBadRequest(message)
        return self.get_response(request)

    @staticmethod
    def _carries_nul(request: HttpRequest) -> bool:
        if "\x00" in request.path or _has_nul(request.META.get("QUERY_STRING", "")):
            return True
        if request.method == "POST" and request.content_type == FORM:
            try:
                return _has_nul(request.body)
            except RequestDataTooBig:
                return False  # the view answers with its own size error
        return False
