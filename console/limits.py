"""Per-caller rate limits on the doors that can be hammered, and request size limits.

Each limited door counts requests per caller in a fixed window (``RATE_LIMITS`` in settings,
``N/SECONDS``, env-overridable so a benchmark can raise them), shared by every worker through
Redis: one pipelined INCR + EXPIRE per request, one round trip for all of a request's counters.
Written here rather than with django-ratelimit, which costs two cache round trips per request
(``add`` then ``incr``), answers 403 and has no Retry-After.

| door | counted per |
| --- | --- |
| token endpoint | agent (or MCP server) credentials, and client address |
| registration (DCR) | client address |
| login (console and end-user) | client address (the account itself: django-axes) |
| two-factor verification | staff member, and client address |
| introspection | MCP server credentials, and client address |

Caller counters are keyed by what the caller presents, never by a name alone: a bucket is a
digest of the client id *and* secret, so nobody who lacks the secret can spend a real agent's or
server's budget; a public client (no secret) is counted per client id *and* address. Login has no
per-username bucket: refusing an account's logins is a lever for strangers (SECURITY.md). An IPv6
address is counted by its /64, the block one subscriber holds.

Over the limit: 429 with Retry-After; OAuth doors answer in RFC 6749's error JSON with
``temporarily_unavailable`` (RFC 6749 §4.1.2.1: "unable to handle the request due to a
temporary overloading"; the registry has no rate-limit code, and RFC 8628's ``slow_down`` means
"poll a device code more slowly"), console pages a plain page.

When Redis cannot be reached the limits fail open with a logged warning: they guard capacity,
not correctness, and introspection must keep answering from PostgreSQL (the login lockout,
django-axes, lives in PostgreSQL and still holds).

Bodies larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` are refused from their Content-Length before
anything reads them: 413, in the OAuth error JSON on protocol and API paths.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import Resolver404, resolve

from audit.middleware import metadata_of
from console.middleware import speaks_json
from policies.oauth.errors import oauth_error
from policies.oauth.server_auth import _basic_credentials

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    @cache  # settings strings: parsed once per value, not per request
    def parse(cls, text: str) -> Rate:
        """``"60/60"``: 60 requests per 60 seconds."""
        count, _, seconds = text.partition("/")
        rate = cls(int(count), int(seconds or 60))
        if rate.count < 1 or rate.seconds < 1:
            raise ValueError(f"rate {text!r}: count and seconds must be positive")
        return rate


def _digest(value: str) -> str:
    # Bounded key names whatever the caller sends; no username or secret in Redis in clear.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_warned_proxy = False


def _warn_untrusted_proxy(request: HttpRequest) -> None:
    """Behind a proxy that is not in AUDIT_TRUSTED_PROXIES every client counts as the proxy: one
    shared bucket for the world. Said once per process, the first time it is seen."""
    global _warned_proxy
    if not _warned_proxy and "HTTP_X_FORWARDED_FOR" in request.META and not settings.AUDIT_TRUSTED_PROXIES:
        _warned_proxy = True
        logger.warning(
            "X-Forwarded-For arrives but AUDIT_TRUSTED_PROXIES is empty: rate limits count every "
            "client as the proxy's address %s. Set TRUSTED_PROXIES to the proxy's network.",
            request.META.get("REMOTE_ADDR"),
        )


def _client_ip(request: HttpRequest) -> str:
    _warn_untrusted_proxy(request)
    address = metadata_of(request).client_ip or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        # One subscriber gets a whole /64: per address it would have 2^64 buckets.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def _agent(request: HttpRequest) -> str | None:
    """An agent (or an MCP server at token exchange) by the credentials it presents: the client
    id with its secret, or for a public client (no secret) with its address."""
    credentials = _basic_credentials(request)
    client_id, secret = (
        credentials if credentials else (request.POST.get("client_id"), request.POST.get("client_secret"))
    )
    if not client_id:
        return None
    return "\x00".join(
        (client_id, "secret", secret) if secret else (client_id, "address", _client_ip(request))
    )


def _server_credentials(request: HttpRequest) -> str | None:
    credentials = _basic_credentials(request)
    if credentials is None:
        client_id, secret = request.POST.get("client_id"), request.POST.get("client_secret")
        credentials = (client_id, secret) if client_id and secret else None
    return "\x00".join(credentials) if credentials else None


def _user(request: HttpRequest) -> str | None:
    return str(request.user.pk) if request.user.is_authenticated else None


# view name -> [(limit name in RATE_LIMITS, who is counted)]
CallerKey = Callable[[HttpRequest], str | None]
LIMITED_DOORS: dict[str, list[tuple[str, CallerKey]]] = {
    "oauth2_provider:token": [("token_per_agent", _agent), ("token_per_address", _client_ip)],
    "oauth2_provider:dcr-register": [("registration_per_address", _client_ip)],
    "oauth2_provider:introspect": [
        ("introspection_per_server", _server_credentials),
        ("introspection_per_address", _client_ip),
    ],
    "login": [("login_per_address", _client_ip)],
    "admin:login": [("login_per_address", _client_ip)],
    "two-factor-verify": [("two_factor_per_user", _user), ("two_factor_per_address", _client_ip)],
}

_last_warning = 0.0


def _warn_unavailable(error: Exception) -> None:
    """Log the outage at most every 10 s: under load it would otherwise be every request."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 10:
        _last_warning = now
        logger.warning("Rate limits not enforced (fail open): the counter store is unavailable: %s", error)


def _count(keys: list[tuple[str, int]]) -> list[int]:
    """Add one to each (key, ttl) counter and return the new values, in one round trip."""
    store = caches["ratelimit"]
    client = getattr(store, "client", None)
    if client is not None and hasattr(client, "get_client"):  # django-redis: shared by every worker
        pipe = client.get_client(write=True).pipeline(transaction=False)
        for key, ttl in keys:
            pipe.incr(key)
            pipe.expire(key, ttl)
        return pipe.execute()[::2]
    counts = []  # local-memory cache (make run without Redis): one process, no sharing needed
    for key, ttl in keys:
        store.add(key, 0, ttl)
        counts.append(store.incr(key))
    return counts


def over_limit(request: HttpRequest, door: str) -> int | None:
    """Count this request against the door's limits; seconds until the caller may retry, or None."""
    now = time.time()
    counters = []
    for name, caller in LIMITED_DOORS[door]:
        who = caller(request)
        if who is None:
            continue
        rate = Rate.parse(settings.RATE_LIMITS[name])
        window = int(now // rate.seconds)
        key = f"ratelimit:{name}:{_digest(who)}:{window}"
        counters.append((key, rate, (window + 1) * rate.seconds))
    if not counters:
        return None
    try:
        counts = _count([(key, rate.seconds + 1) for key, rate, _ in counters])
    except Exception as error:  # noqa: BLE001  (any failure of the store: redis, socket, timeout)
        _warn_unavailable(error)
        return None
    waits = [end - now for (_, rate, end), count in zip(counters, counts, strict=True) if count > rate.count]
    return max(1, math.ceil(max(waits))) if waits else None


def too_many_requests(request: HttpRequest, retry_after: int) -> HttpResponse:
    if speaks_json(request.path):
        response = oauth_error(
            "temporarily_unavailable",
            f"Too many requests from this caller; retry in {retry_after} s.",
            429,
        )
    else:
        response = TemplateResponse(
            request, "limits/too_many_requests.html", {"retry_after": retry_after}, status=429
        ).render()
    response["Retry-After"] = str(retry_after)
    return response


def too_large(request: HttpRequest) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    message = f"The request body is larger than {limit} bytes."
    if speaks_json(request.path):
        return oauth_error(_too_large_error(request), message, 413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


def _too_large_error(request: HttpRequest) -> str:
    """The door's own error code for a body too large (e.g. the event API's ``batch_too_large``)."""
    try:
        view = resolve(request.path_info).func
    except Resolver404:
        return "invalid_request"
    view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
    return getattr(view_class, "body_too_large_error", "invalid_request")


def _declared_too_large(request: HttpRequest) -> bool:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None or request.content_type == "multipart/form-data":
        return False  # multipart file parts are not held in memory (Django's own rule)
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return False


class LimitsMiddleware:
    """Size limits on every request, rate limits on the doors in ``LIMITED_DOORS``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _declared_too_large(request):
            return too_large(request)
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view, args, kwargs) -> HttpResponse | None:
        door = request.resolver_match.view_name if request.resolver_match else ""
        if request.method != "POST" or door not in LIMITED_DOORS:
            return None
        try:
            retry_after = over_limit(request, door)
        except (RequestDataTooBig, TooManyFieldsSent):
            return None  # the view refuses the body in its own words (process_exception below)
        return too_many_requests(request, retry_after) if retry_after else None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A body Django refuses while a view reads it: in the caller's format, not a 400 HTML page."""
        if isinstance(exception, RequestDataTooBig):
            return too_large(request)
        if isinstance(exception, TooManyFieldsSent) and speaks_json(request.path):
            return oauth_error("invalid_request", "The request has too many fields.", 400)
        return None
