"""
The protocol doors DOT does not cover as we need: the policy-aware consent page, the token
endpoint limited to agent grants, and the MCP-server introspection endpoint. All are thin: rules
live in ``policies.decisions``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.exceptions import FatalClientError, OAuthToolkitError
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import AuthorizationView, TokenView
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidRequestFatalError

from audit.events import record
from policies.decisions import decide
from policies.introspection import introspect
from policies.models import (
    TOOL_NAME_CHARACTERS,
    Agent,
    Delegation,
    Tool,
    ToolAction,
    is_tool_name,
)
from policies.oauth import token_exchange
from policies.oauth.errors import oauth_error, with_issuer_on_error
from policies.oauth.pending import wait_for_approval
from policies.oauth.resources import server_for_resource, target_error_description
from policies.oauth.scopes import scope_descriptions
from policies.oauth.server_auth import authenticate_server, server_credentials
from policies.services import delegate

INACTIVE_AGENT_MESSAGES = {
    Agent.Status.PENDING: "This agent is waiting for an administrator's approval.",
    Agent.Status.SUSPENDED: "This agent has been suspended by an administrator.",
}


@method_decorator(xframe_options_deny, name="dispatch")
@method_decorator(never_cache, name="dispatch")
class ConsentView(AuthorizationView):
    """The authorization endpoint: a logged-in human reviews what an agent asks for."""

    # The scopes the human leaves ticked arrive as "grant" values, beside DOT's hidden fields.
    template_name = "policies/consent.html"

    def get(self, request, *args, **kwargs):
        # Consent is never skipped on the strength of an earlier token (DOT's
        # approval_prompt=auto): that token may be bound to another server or fewer scopes.
        if "approval_prompt" in request.GET:
            request.GET = request.GET.copy()
            del request.GET["approval_prompt"]
        agent = Agent.objects.filter(client_id=request.GET.get("client_id", "")).first()
        if agent is not None and agent.status != Agent.Status.ACTIVE:
            # DOT would say "invalid client_id"; tell the human why this agent cannot proceed.
            error = {"error": "unauthorized_client", "description": INACTIVE_AGENT_MESSAGES[agent.status]}
            return self.render_to_response({"error": error}, status=400)
        return super().get(request, *args, **kwargs)

    def validate_authorization_request(self, request):
        scopes, credentials = super().validate_authorization_request(request)
        # The client and its redirect URI are validated by now, so errors go back to it.
        if credentials.get("code_challenge_method") != "S256":
            # DOT refuses "plain" only when the code is minted; refuse it before consent.
            raise self._error_to_client(
                "invalid_request", 'code_challenge_method must be "S256".', credentials
            )
        resources = request.GET.getlist("resource")
        self.server = server_for_resource(resources)
        if self.server is None:
            raise self._error_to_client("invalid_target", target_error_description(resources), credentials)
        return scopes, credentials

    def redirect(self, redirect_to: str, application):
        return super().redirect(with_issuer_on_error(redirect_to, self.request), application)

    @staticmethod
    def _error_to_client(error: str, description: str, credentials: dict) -> OAuthToolkitError:
        return OAuthToolkitError(
            error=CustomOAuth2Error(error=error, description=description, state=credentials.get("state")),
            redirect_uri=credentials["redirect_uri"],
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        agent = context.get("application")
        if agent is None or self.request.method != "GET":
            return context
        requested = context.get("scopes") or []
        decision = decide(agent=agent, server=self.server, human=self.request.user, scopes=requested)
        descriptions = scope_descriptions(self.server)
        tools = {t.name: t for t in self.server.tools.all()}
        context.update(
            server=self.server,
            decision=decision,
            redirect_host=urlsplit(context.get("redirect_uri") or "").netloc,
            scope_rows=[
                {
                    "scope": scope,
                    "label": descriptions.get(scope, scope),
                    "tool": tools.get(scope.partition(":")[0]),
                    "grantable": scope in decision.scopes,
                    "needs_approval": scope in decision.needs_approval,
                    "refused": decision.refused.get(scope, ""),
                }
                for scope in requested
            ],
        )
        return context

    def form_valid(self, form):
        # DOT looks the agent up unguarded; a tampered client_id must not become a 500.
        if not Agent.objects.filter(client_id=form.cleaned_data["client_id"]).exists():
            error = {"error": "invalid_client", "description": "Unknown agent."}
            return self.render_to_response({"error": error}, status=400)
        return super().form_valid(form)

    def create_authorization_response(self, request, scopes, credentials, allow):
        """Every way to an authorization code passes here: ask the policy, record the delegation."""
        agent = Agent.objects.get(client_id=credentials["client_id"])
        server = server_for_resource(credentials.get("resource") or [])
        if server is None:
            # Only a tampered form gets here (the GET validated the resource): no redirect.
            raise FatalClientError(
                error=InvalidRequestFatalError(
                    description=target_error_description(credentials.get("resource") or [])
                )
            )
        requested = scopes.split()
        chosen = (
            set(request.POST.getlist("grant")) & set(requested)
            if request.method == "POST"
            else set(requested)
        )
        decision = decide(agent=agent, server=server, human=request.user, scopes=chosen) if allow else None
        if decision is None or not decision.allowed:
            record(
                "consent.refused",
                outcome="deny",
                reason=decision.reason if decision else "human_refused",
                human=request.user,
                agent=agent,
                server=server,
                request=request,
                detail={"requested": requested, "chosen": sorted(chosen)},
            )
            return super().create_authorization_response(request, scopes, credentials, allow=False)
        with transaction.atomic():
            delegation = delegate(request.user, agent, server, decision.scopes, request=request)
            if delegation.status == Delegation.Status.PENDING:
                # The code is minted once an approver approves: the human waits on this page.
                return wait_for_approval(request, delegation, credentials), {}, None, 302
            credentials["delegation"] = delegation
            return super().create_authorization_response(
                request, " ".join(sorted(decision.scopes)), credentials, allow=True
            )


# Grants this console implements itself, because DOT does not: grant_type -> view function.
# Each lives in its own module; every one still ends in a token bound to a human's delegation.
EXTENSION_GRANTS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    token_exchange.GRANT_TYPE: token_exchange.token_exchange,
}


class AgentTokenView(TokenView):
    """DOT's token endpoint, limited to the grants in the metadata (DOT also routes e.g.
    device_code). Agents act for a human: only grants that carry a human's delegation are served."""

    def post(self, request: HttpRequest, *args, **kwargs):
        grant_type = request.POST.get("grant_type")
        supported = oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED
        if not grant_type:
            return oauth_error("invalid_request", "The grant_type parameter is missing.", 400)
        if grant_type not in supported:
            return oauth_error("unsupported_grant_type", f"Supported: {', '.join(supported)}.", 400)
        if grant_type in EXTENSION_GRANTS:
            return EXTENSION_GRANTS[grant_type](request)
        return super().post(request, *args, **kwargs)


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectionView(View):
    """RFC 7662 introspection for MCP servers, with optional tool context.

    Only a registered MCP server may call it, and it learns about tokens bound to itself only:
    any other token, revoked, expired or unknown, is ``{"active": false}`` and nothing more.
    Optional ``tool`` and ``action`` parameters (RFC 7662 §2.1 allows extensions) ask whether
    that call is allowed; the answer carries the decision and an audit event records it.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args, **kwargs) -> JsonResponse:
        if request.content_type != "application/x-www-form-urlencoded":
            return oauth_error("invalid_request", "Use application/x-www-form-urlencoded.", 400)
        credentials = server_credentials(request)
        problem = self.parameter_problem(request)
        if credentials is None or problem is not None:
            # Wrong credentials are refused before bad parameters are described.
            return problem if authenticate_server(request) is not None else self.unauthorized()
        tool, action = request.POST.get("tool", ""), request.POST.get("action", "")
        # The answer may come from the cache all workers share (policies.introspection).
        body = introspect(request, credentials, request.POST["token"], tool, action)
        return self.unauthorized() if body is None else self.respond(body)

    @staticmethod
    def parameter_problem(request: HttpRequest) -> JsonResponse | None:
        for name in ("token", "tool", "action"):
            if len(request.POST.getlist(name)) > 1:
                return oauth_error("invalid_request", f"The {name} parameter is repeated.", 400)
        if not request.POST.get("token", ""):
            return oauth_error("invalid_request", "The token parameter is missing.", 400)
        tool, action = request.POST.get("tool", ""), request.POST.get("action", "")
        if bool(tool) != bool(action):
            return oauth_error("invalid_request", "tool and action go together.", 400)
        if tool and not (is_tool_name(tool, Tool) and is_tool_name(action, ToolAction)):
            return oauth_error("invalid_request", f"tool and action are names: {TOOL_NAME_CHARACTERS}.", 400)
        return None

    @staticmethod
    def unauthorized() -> JsonResponse:
        return oauth_error(
            "invalid_client",
            "MCP server authentication failed.",
            401,
            WWW_Authenticate='Basic realm="introspection"',
        )

    @staticmethod
    def respond(body: dict) -> JsonResponse:
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response
