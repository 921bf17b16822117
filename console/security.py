"""Authentication hardening and browser security headers.

- Content-Security-Policy (django-csp, policy in settings) and Permissions-Policy on every
  response. The admin theme's Alpine.js evaluates its ``x-data`` expressions, so admin pages
  alone also allow ``'unsafe-eval'``; every other page runs only the console's own scripts.
- Login lockout (django-axes): each lockout is an ``auth.locked_out`` audit event.
- Two-factor authentication for console staff (django-otp): a TOTP device, enrolled by scanning
  a QR code and confirming one code, plus single-use recovery codes shown once and kept hashed
  (console.models). With ``CONSOLE_REQUIRE_2FA``, a staff member's session reaches no console
  page (``/admin/``, ``/audit/``), no management API call (``/api/``), and neither consents for
  agents (``/oauth/authorize/``) nor manages them (``/my-agents/``) until it is verified: with a
  password alone, nobody can delegate a staff member's scopes. End users (no staff status) are not
  asked. Verifying locks the device row, so one code verifies once and every wrong guess counts.
"""

from __future__ import annotations

import re
from base64 import b32encode
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlencode

import segno
from axes.signals import user_locked_out
from csp.constants import HEADER
from csp.middleware import CheckableLazyObject, CSPMiddleware, PolicyParts
from csp.utils import build_policy
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.events import record
from audit.middleware import metadata_of
from console.models import RecoveryCodeDevice

# --- Headers ------------------------------------------------------------------------------------

# Pages drawn in the admin theme: the admin and the audit pages that use its frame.
UNFOLD_PAGES = ("/admin/", "/audit/")


# What a view may set on its response to change the policy (django-csp's decorators).
CSP_RESPONSE_OVERRIDES = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt")
ALPINE = {"script-src": ["'unsafe-eval'"]}  # django-unfold's Alpine.js evaluates x-data strings


@lru_cache(maxsize=2)
def _policy_without_nonce(unfold_page: bool) -> str:
    return build_policy(update=ALPINE if unfold_page else None)


@receiver(setting_changed, dispatch_uid="console.security.csp_setting_changed")
def _forget_policy(setting: str, **kwargs) -> None:
    if setting == "CONTENT_SECURITY_POLICY":
        _policy_without_nonce.cache_clear()


class ConsoleCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, plus Alpine's eval on admin-theme pages and the other headers.

    A response that used no nonce and no per-view policy (every JSON answer, most pages) gets a
    header built once: django-csp rebuilds it for each response, which cost more than the rest
    of an introspection answer's own work.
    """

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(UNFOLD_PAGES) and parts.update is None:
            parts.update = ALPINE
        return parts

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        plain = (
            getattr(request, "_csp_nonce", None) is None
            and not any(hasattr(response, name) for name in CSP_RESPONSE_OVERRIDES)
            and not getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            and not settings.DEBUG  # django-csp leaves Django's debug pages without a policy
        )
        if plain:
            response.headers.setdefault(
                HEADER, _policy_without_nonce(request.path_info.startswith(UNFOLD_PAGES))
            )
            # As django-csp does: a nonce asked for after the header is written is an error.
            request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        else:
            response = super().process_response(request, response)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        # drf-spectacular's Swagger page sets "unsafe-none" for OAuth login popups, which the
        # API's session authentication never opens.
        response["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
        return response


# --- Login lockout (django-axes) -----------------------------------------------------------------


def login_client_ip(request: HttpRequest) -> str:
    """The address django-axes counts failures for: the audit trail's, TRUSTED_PROXIES-aware."""
    return metadata_of(request).client_ip or ""


@receiver(user_locked_out, dispatch_uid="console.security.locked_out")
def record_lockout(sender, request: HttpRequest, username: str | None = None, **kwargs) -> None:
    user_model = get_user_model()
    name = str(username or "")[:150]
    human = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: name}).first() if name else None
    record(
        "auth.locked_out",
        outcome="deny",
        reason="too_many_failed_logins",
        human=human,
        request=request,
        detail={"username": name, "failure_limit": settings.AXES_FAILURE_LIMIT},
    )


# --- Two-factor authentication for console staff ---------------------------------------------------

# Where a staff session must be verified: the console, the management API, and what delegates
# the person's scopes to agents. The admin's own login and logout stay reachable, so a
# half-signed-in staff member can leave.
TWO_FACTOR_GATED = ("/admin/", "/audit/", "/api/", "/oauth/authorize/", "/my-agents/")
TWO_FACTOR_OPEN = ("/admin/login/", "/admin/logout/")
TOTP_CODE = re.compile(r"\d{6}")


def needs_second_factor(user) -> bool:
    return bool(
        settings.CONSOLE_REQUIRE_2FA and user.is_authenticated and user.is_staff and not user.is_verified()
    )


class StaffTwoFactorMiddleware:
    """After django_otp's OTPMiddleware: staff who have not verified a device this session are
    sent to verify (or to enrol, the first time); the API answers 403 instead of redirecting."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        # The prefix test comes first: protocol doors (introspection, token) never load a session.
        if path.startswith(TWO_FACTOR_GATED) and not path.startswith(TWO_FACTOR_OPEN):
            if needs_second_factor(request.user):
                if path.startswith("/api/"):
                    return JsonResponse(
                        {"detail": "Two-factor verification required: sign in to the console first."},
                        status=403,
                    )
                step = "two-factor-verify" if user_has_device(request.user) else "two-factor-setup"
                return redirect(f"{reverse(step)}?{_next_query(request.get_full_path())}")
        return self.get_response(request)


def _next_query(path: str) -> str:
    return urlencode({"next": path})


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse("admin:index")


def _staff_only(view: Callable) -> Callable:
    """Two-factor pages are for signed-in staff; anyone else has nothing to enrol or verify."""

    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Two-factor authentication is for console staff.")
        return view(request, *args, **kwargs)

    return login_required(never_cache(require_http_methods(["GET", "POST"])(wrapped)))


def _qr_svg(url: str) -> str:
    return segno.make(url, error="m").svg_inline(scale=4, title="Authenticator QR code")


def _record_wrong_code(request: HttpRequest, user, step: str) -> None:
    """A wrong TOTP or recovery code, at enrolment or at sign-in, in the audit trail."""
    record(
        "auth.2fa_failed",
        outcome="deny",
        reason="wrong_code",
        actor=user,
        human=user,
        request=request,
        detail={"step": step},
    )


@_staff_only
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator app: scan, confirm one code, then see the recovery codes once."""
    user = request.user
    if user_has_device(user):
        return redirect(f"{reverse('two-factor-verify')}?{_next_query(_next_url(request))}")
    # One pending device per person, kept across reloads so the scanned secret stays valid.
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    error = ""
    if request.method == "POST":
        code = request.POST.get("code", "").strip()
        if TOTP_CODE.fullmatch(code) and device.verify_token(code):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            recovery, _ = RecoveryCodeDevice.objects.get_or_create(
                user=user, defaults={"name": "Recovery codes", "confirmed": True}
            )
            codes = recovery.replace_codes()
            otp_login(request, device)
            request.session.cycle_key()
            record(
                "auth.2fa_enrolled",
                outcome="allow",
                actor=user,
                human=user,
                request=request,
                detail={"device": "totp", "recovery_codes": len(codes)},
            )
            return render(
                request, "security/recovery_codes.html", {"codes": codes, "next": _next_url(request)}
            )
        error = "That code did not match. Check the time on your phone and try the newest code."
        _record_wrong_code(request, user, "enrolment")
    return render(
        request,
        "security/two_factor_setup.html",
        {
            "qr_svg": _qr_svg(device.config_url),
            "secret": _base32(device.bin_key),
            "error": error,
            "next": _next_url(request),
        },
        status=400 if error else 200,
    )


def _base32(key: bytes) -> str:
    text = b32encode(key).decode().rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


@_staff_only
def two_factor_verify(request: HttpRequest) -> HttpResponse:
    """The second step of every staff sign-in: a code from the app, or one recovery code."""
    user = request.user
    if not user_has_device(user):
        return redirect(f"{reverse('two-factor-setup')}?{_next_query(_next_url(request))}")
    if getattr(user, "is_verified", lambda: False)():
        return redirect(_next_url(request))
    error = ""
    if request.method == "POST":
        code = request.POST.get("code", "").strip()
        device = _verified_device(user, code)
        if device is not None:
            otp_login(request, device)
            request.session.cycle_key()  # a new privilege level gets a new session key
            if isinstance(device, RecoveryCodeDevice):
                record(
                    "auth.recovery_code_used",
                    outcome="allow",
                    actor=user,
                    human=user,
                    request=request,
                    detail={"remaining": device.remaining()},
                )
            else:
                record(
                    "auth.2fa_verified",
                    outcome="allow",
                    actor=user,
                    human=user,
                    request=request,
                    detail={"device": "totp"},
                )
            return redirect(_next_url(request))
        error = "That code is not valid. Use the newest code from your app, or an unused recovery code."
        _record_wrong_code(request, user, "sign-in")
    return render(
        request,
        "security/two_factor_verify.html",
        {"error": error, "next": _next_url(request)},
        status=400 if error else 200,
    )


def _verified_device(user, code: str):
    """The device that accepts ``code``: six digits go to the TOTP app, anything else is tried as a
    recovery code. django-otp throttles repeated failures on each device.

    django-otp reads the device, checks and saves it back with no lock: two concurrent requests
    would both accept one code and their failures overwrite each other. The device rows are
    locked for the check, so requests for one person's devices take turns.
    """
    if TOTP_CODE.fullmatch(code):
        model = TOTPDevice
    elif code:
        model = RecoveryCodeDevice
    else:
        return None
    with transaction.atomic():
        for device in model.objects.devices_for_user(user, confirmed=True).select_for_update().order_by("pk"):
            if device.verify_token(code):
                return device
    return None
