"""A database that is down or restarting is a 503 the caller may retry, never a 500 traceback.

While PostgreSQL restarts, every query fails with ``OperationalError`` (or ``InterfaceError`` on
a connection the restart closed). Nothing was decided or recorded then, so the honest answer is
"try again shortly": protocol and API callers get RFC 6749's ``temporarily_unavailable`` error
JSON, people a plain page, both with ``Retry-After``. Django reconnects by itself once the
database is back (``CONN_HEALTH_CHECKS`` in the settings), so no restart of the web node is needed.

Errors raised by a view reach ``process_exception``. Errors raised inside another middleware
(the session or the user loaded by auditlog's middleware) are turned into a 500 response by Django
before any outer middleware sees them; ``got_request_exception`` marks such a request, and
``__call__`` swaps its 500 for the 503.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from console.middleware import speaks_json

logger = logging.getLogger(__name__)

# Seconds a caller should wait before trying again: about what a PostgreSQL restart or failover takes.
RETRY_AFTER_SECONDS = 5
OUTAGE_ERRORS = (OperationalError, InterfaceError)


def outage_response(request: HttpRequest) -> HttpResponse:
    """The 503 for ``request``: OAuth error JSON at protocol and API doors, a plain page elsewhere."""
    message = "The service is temporarily unavailable. Try again shortly."
    if speaks_json(request.path):
        response: HttpResponse = JsonResponse(
            {"error": "temporarily_unavailable", "error_description": message}, status=503
        )
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def _mark_outage(sender, request: HttpRequest | None = None, **kwargs) -> None:
    """Called while Django handles an uncaught exception (sys.exc_info() is that exception)."""
    if request is not None and isinstance(sys.exc_info()[1], OUTAGE_ERRORS):
        request.database_outage = True


class DatabaseOutageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        got_request_exception.connect(_mark_outage, dispatch_uid="console.outages")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, "database_outage", False):
            return outage_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OUTAGE_ERRORS):
            return None
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        return outage_response(request)
