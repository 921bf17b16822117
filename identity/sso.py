"""
Console SSO: staff and end users sign in through the enterprise's OpenID Connect provider.

mozilla-django-oidc runs the authorization code flow (state, nonce, PKCE, the ID token's
signature); this backend adds what it leaves out and what the console needs:

- the ID token's ``iss`` and ``aud`` are checked (the library checks neither), and the userinfo
  ``sub`` must be the ID token's (OIDC Core §5.3.2);
- the human is found by issuer + subject (``identity.humans``), never by e-mail, so an IdP cannot
  sign in as a local break-glass account; a new subject becomes a new human;
- the IdP's groups (``OIDC_GROUPS_CLAIM``) set the console roles and policy groups that
  ``OIDC_GROUP_MAP`` names, at every login: a group removed at the IdP takes its role away at the
  next login. Staff status follows the roles.

An SSO login does not replace the console's own second factor for staff: the IdP's ``amr`` is
not trusted as one (the console's TOTP gate still applies to every staff session).
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.functional import cached_property
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from audit.events import record
from console.roles import Role
from identity.humans import (
    SubjectLinkedElsewhere,
    claimed_groups,
    human_for,
    staff_follows_roles,
    sync_groups,
    verified_email,
)

logger = logging.getLogger(__name__)

BACKEND = "identity.sso.ConsoleOIDCBackend"
# Clock skew tolerated between the provider and this console on the ID token's exp, iat and nbf.
LEEWAY_SECONDS = 30
MAX_SUBJECT = 255  # ExternalIdentity.subject


def sso_enabled() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID) and BACKEND in settings.AUTHENTICATION_BACKENDS


def login_method(user: AbstractBaseUser) -> str:
    """How ``user`` just signed in, for the auth.login audit event (Django sets ``user.backend``)."""
    return "sso" if getattr(user, "backend", "") == BACKEND else "password"


def mapped_groups() -> dict[str, list[Group]]:
    """OIDC_GROUP_MAP with its console groups: role groups (created if missing, as ensure_roles
    does) and existing policy groups. A name that is neither is never created: the system check
    ``identity.E001`` flags it at start-up, and it is skipped here."""
    roles = {role.value for role in Role}
    names = {name for names in settings.OIDC_GROUP_MAP.values() for name in names}
    groups = {group.name: group for group in Group.objects.filter(name__in=names)}
    for name in names - set(groups):
        if name in roles:
            groups[name] = Group.objects.get_or_create(name=name)[0]
        else:
            logger.error("OIDC_GROUP_MAP names the group %r, which does not exist: not mapped.", name)
    return {
        idp_group: [groups[name] for name in names if name in groups]
        for idp_group, names in settings.OIDC_GROUP_MAP.items()
    }


class SsoRefused(SuspiciousOperation):
    """The provider's answer is refused; ``reason`` is the cause the audit records."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _refusal_reason(error: Exception) -> str:
    if isinstance(error, SsoRefused):
        return error.reason
    if isinstance(error, jwt.ExpiredSignatureError):
        return "sso_id_token_expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "sso_id_token_not_yet_valid"
    if isinstance(error, jwt.InvalidTokenError):
        return "sso_id_token_invalid"
    if isinstance(error, requests.RequestException):
        return "sso_provider_error"
    if isinstance(error, SubjectLinkedElsewhere):
        return "sso_subject_linked_elsewhere"
    return "sso_refused"  # the library's own checks: nonce, alg, no matching key


def note_sso_refusal(request: HttpRequest, reason: str, message: str) -> None:
    """Remembered on the request for the auth.login_failed event Django's user_login_failed
    signal records (audit.signals), with the cause and the issuer."""
    request.sso_refusal = {"reason": reason, "detail": {"issuer": settings.OIDC_OP_ISSUER, "cause": message}}


class ConsoleOIDCBackend(OIDCAuthenticationBackend):
    def authenticate(self, request: HttpRequest | None, **kwargs) -> AbstractBaseUser | None:
        """A refused ID token (issuer, audience, times, nonce, signature) or a provider that fails
        to answer is a failed login, not a 400 or 500: the human is sent back to the sign-in page,
        and the failure is audited with its cause."""
        try:
            return super().authenticate(request, **kwargs)
        except (
            SuspiciousOperation,
            jwt.InvalidTokenError,
            requests.RequestException,
            SubjectLinkedElsewhere,
        ) as error:
            logger.warning("SSO login refused: %s", error.__class__.__name__)
            if request is not None and not hasattr(request, "sso_refusal"):
                note_sso_refusal(request, _refusal_reason(error), str(error)[:200])
            return None

    def _verify_jws(self, payload: str, key: Any) -> dict:
        """The library's check, with clock leeway: it allows none, so a provider whose clock is a
        second ahead (iat in the future) made every login fail."""
        alg = jwt.get_unverified_header(payload).get("alg")
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SsoRefused("sso_wrong_algorithm", "The ID token's alg is not OIDC_RP_SIGN_ALGO.")
        # aud and iss: verify_token (an ID token's; a signed userinfo answer has neither).
        return jwt.decode(
            payload, key, algorithms=[alg], leeway=LEEWAY_SECONDS, options={"verify_aud": False}
        )

    def verify_token(self, token: str, **kwargs) -> dict:
        payload = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if payload.get("iss") != settings.OIDC_OP_ISSUER or self.OIDC_RP_CLIENT_ID not in audiences:
            raise SsoRefused(
                "sso_wrong_issuer_or_audience",
                "The ID token was not issued by the configured provider for this console.",
            )
        # OIDC Core §3.1.3.7 (4), (5): a token for several audiences must name us as its azp.
        azp = payload.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.OIDC_RP_CLIENT_ID:
            raise SsoRefused(
                "sso_wrong_audience", "The ID token is for several audiences and not authorized for this one."
            )
        self.id_token_claims = payload
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict) -> AbstractBaseUser | None:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        subject = payload.get("sub")
        if not isinstance(subject, str) or not subject or userinfo.get("sub") != subject:
            # The library turns this into None without saying why: note the cause first.
            note_sso_refusal(
                self.request, "sso_subject_mismatch", "The userinfo subject is not the ID token's."
            )
            raise SuspiciousOperation("The userinfo subject is not the ID token's.")
        if "\x00" in subject or len(subject) > MAX_SUBJECT:
            note_sso_refusal(self.request, "sso_malformed_subject", "The ID token's sub cannot be stored.")
            raise SuspiciousOperation("The ID token's sub cannot be stored.")
        claims = {**payload, **userinfo}
        human = human_for(settings.OIDC_OP_ISSUER, subject, claims, via="sso")
        email = verified_email(claims)
        if email and human.email != email:
            human.email = email
            human.save(update_fields=["email"])
        sync_groups(human, claimed_groups(claims, settings.OIDC_GROUPS_CLAIM), mapped_groups())
        staff_follows_roles(human)
        return human


class SsoStartView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider; a 404 while SSO is not configured."""

    def dispatch(self, request: HttpRequest, *args, **kwargs):
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        return super().dispatch(request, *args, **kwargs)


class SsoCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back: state (and nonce, PKCE) checked by the library, then login.
    Refusals before any authentication (the provider's error, an unknown state) are audited here."""

    def dispatch(self, request: HttpRequest, *args, **kwargs):
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if error := request.GET.get("error"):
            _record_refusal(request, "sso_provider_refused", {"error": error[:100]})
        elif "code" in request.GET and request.GET.get("state") not in request.session.get("oidc_states", {}):
            # A forged or replayed state (or a session that expired meanwhile): the library
            # answers 400 or sends the browser back to the sign-in page.
            _record_refusal(request, "sso_state_mismatch", {})
        return super().get(request)


def _record_refusal(request: HttpRequest, reason: str, detail: dict) -> None:
    record(
        "auth.login_failed",
        outcome="deny",
        reason=reason,
        request=request,
        detail={"issuer": settings.OIDC_OP_ISSUER, **detail},
    )


class SsoSessionRefresh(SessionRefresh):
    """Re-checks an SSO session at the provider (``prompt=none``) once its
    ``OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS`` are over, on the next page load: the callback signs the
    same human in again and applies their groups as they are now, so a role removed (or a person
    deprovisioned) at the provider leaves open console sessions within that time. The session is
    kept (the callback does not log the same human in twice), so the console's TOTP verification
    stays valid and staff are not asked again; a provider that refuses logs the human out.
    Sessions signed in with a password are left alone."""

    @cached_property
    def exempt_urls(self) -> set[str]:
        # The library's own list names its default URL names, which this console does not use.
        return {reverse("sso-start"), reverse("sso-callback"), *self.OIDC_EXEMPT_URLS}

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not sso_enabled():
            return None
        # Read per request (the library reads them once, at start-up): tests change the settings.
        self.OIDC_OP_AUTHORIZATION_ENDPOINT = settings.OIDC_OP_AUTHORIZATION_ENDPOINT
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().process_request(request)
