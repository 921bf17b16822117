"""
The human's side of a delegation waiting for an approver.

The consent POST that created a pending delegation keeps the authorization request in the
human's session (client id, redirect URI, state, PKCE challenge, resource: nothing secret) and
sends the browser to a waiting page. Once an approver approves, the page completes the
authorization exactly as a direct consent does (code, state and iss to the agent's redirect URI);
once denied, it shows the approver's comment and sends the agent ``access_denied``, as it does when
the request ended otherwise (no approver decided in time, or a newer consent replaced it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.http import OAuth2ResponseRedirect
from oauth2_provider.views.mixins import OAuthLibMixin

from policies.approval import approval_deadline
from policies.decisions import decide
from policies.models import Delegation
from policies.oauth.errors import with_issuer_on_error

SESSION_KEY = "pending_authorizations"
# Seconds between two looks at the delegation's status while the page waits.
REFRESH_SECONDS = 5


def wait_for_approval(request: HttpRequest, delegation: Delegation, credentials: dict) -> str:
    """Keep the authorization request for later; the URL of the page where the human waits."""
    kept = {key: value for key, value in credentials.items() if key not in ("user", "delegation")}
    pending = request.session.get(SESSION_KEY, {})
    pending[str(delegation.pk)] = kept
    request.session[SESSION_KEY] = pending
    return request.build_absolute_uri(reverse("oauth2_provider:authorize-pending", args=[delegation.pk]))


@method_decorator(xframe_options_deny, name="dispatch")
@method_decorator(never_cache, name="dispatch")
class PendingAuthorizationView(LoginRequiredMixin, OAuthLibMixin, View):
    """GET shows where the delegation stands; POST (CSRF-protected) finishes the authorization."""

    template_name = "policies/consent_pending.html"

    def _load(self, request: HttpRequest, pk: int) -> tuple[Delegation, dict]:
        credentials = request.session.get(SESSION_KEY, {}).get(str(pk))
        delegation = (
            Delegation.objects.select_related("agent", "server").filter(pk=pk, human=request.user).first()
        )
        if credentials is None or delegation is None:
            raise Http404("No authorization of yours waits here.")
        return delegation, credentials

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        delegation, credentials = self._load(request, pk)
        context = {
            "delegation": delegation,
            "agent": delegation.agent,
            "server": delegation.server,
            "scopes": sorted(delegation.scopes),
            "redirect_host": urlsplit(credentials["redirect_uri"]).netloc,
            "refresh_seconds": REFRESH_SECONDS,
            "decide_by": approval_deadline(delegation),
            "timeout_hours": f"{settings.DELEGATION_APPROVAL_TIMEOUT_HOURS:g}",
        }
        return render(request, self.template_name, context)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        delegation, credentials = self._load(request, pk)
        if delegation.status == Delegation.Status.PENDING:
            return self.get(request, pk)
        pending = request.session[SESSION_KEY]
        del pending[str(pk)]
        request.session[SESSION_KEY] = pending
        decision = decide(agent=delegation.agent, server=delegation.server, delegation=delegation)
        allow = decision.allowed
        if allow:
            credentials["delegation"] = delegation
        scopes = sorted(decision.scopes) if allow else []
        try:
            uri, _headers, _body, _status = self.get_oauthlib_core().create_authorization_response(
                request, scopes, credentials, allow
            )
        except OAuthToolkitError as error:
            _redirect, response = self.error_response(error)
            uri = with_issuer_on_error(response["url"], request)
        return OAuth2ResponseRedirect(uri, delegation.agent.get_allowed_schemes())
