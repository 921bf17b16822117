"""Error pages for the doors whose callers are programs: JSON, in the shape each door speaks."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found

from console.middleware import speaks_json
from policies.oauth.errors import oauth_error


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: DRF's ``{"detail": ...}`` under /api/, the OAuth error shape at the protocol doors."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    if speaks_json(request.path):
        return oauth_error("not_found", "No such endpoint or object.", 404)
    return page_not_found(request, exception)
