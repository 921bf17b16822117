"""
The token-exchange grant (RFC 8693) at the token endpoint, for MCP servers.

DOT and oauthlib have no token exchange, so this door reads the request itself. The caller is an
MCP server, authenticated with its own credentials (as at introspection); it is the actor, so
``actor_token`` is not taken. It presents an access token bound to itself (``subject_token``) and
names the target MCP server by ``resource`` and/or ``audience`` (its resource URI). The rules are
``policies.decisions.decide``'s; ``policies.exchange`` mints and records.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from audit.events import record
from policies.decisions import Reason
from policies.exchange import exchange_token
from policies.models import McpServer
from policies.oauth.errors import oauth_error
from policies.oauth.server_auth import authenticate_server
from policies.tokens import access_token_by_value

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SINGLE_PARAMETERS = ("subject_token", "subject_token_type", "requested_token_type", "scope")

# Why decide() refused, as the RFC 6749 / 8693 error the MCP server gets back.
REFUSALS: dict[str, tuple[str, str]] = {
    Reason.EXCHANGE_NOT_ALLOWED: (
        "unauthorized_client",
        "No exchange policy lets this MCP server exchange tokens for the target server.",
    ),
    Reason.CHAIN_TOO_DEEP: (
        "invalid_grant",
        "The subject token's delegation chain is already at its longest.",
    ),
    Reason.NO_DELEGATION: (
        "invalid_grant",
        "The human has no approved delegation to this agent on the target server: "
        "they must consent there first.",
    ),
    Reason.NO_USABLE_SCOPE: (
        "invalid_scope",
        "None of the requested scopes is allowed by both the human's delegation on the target "
        "server and the exchange policy.",
    ),
    # One answer whatever is wrong with the subject token (unknown, bound to another server,
    # expired, revoked, its agent suspended, ...): the audit event says which.
    Reason.SUBJECT_UNUSABLE: (
        "invalid_grant",
        "The subject token is not a live token bound to the MCP server presenting it.",
    ),
    Reason.SERVER_INACTIVE: ("invalid_target", "The target MCP server is not active."),
}


def token_exchange(request: HttpRequest) -> JsonResponse:
    """``grant_type=urn:ietf:params:oauth:grant-type:token-exchange`` at ``/oauth/token/``."""
    if request.content_type != "application/x-www-form-urlencoded":
        return oauth_error("invalid_request", "Use application/x-www-form-urlencoded.", 400)
    actor = authenticate_server(request)
    if actor is None:
        return oauth_error(
            "invalid_client",
            "Token exchange is for MCP servers, with their own credentials.",
            401,
            WWW_Authenticate='Basic realm="token"',
        )
    for name in SINGLE_PARAMETERS:
        if len(request.POST.getlist(name)) > 1:
            return oauth_error("invalid_request", f"The {name} parameter is repeated.", 400)
    raw_subject = request.POST.get("subject_token", "")
    if not raw_subject or not request.POST.get("subject_token_type"):
        return oauth_error("invalid_request", "subject_token and subject_token_type are required.", 400)
    if request.POST["subject_token_type"] != ACCESS_TOKEN_TYPE:
        return oauth_error("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}.", 400)
    if request.POST.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        return oauth_error("invalid_request", f"Only {ACCESS_TOKEN_TYPE} can be issued.", 400)
    if "actor_token" in request.POST or "actor_token_type" in request.POST:
        return oauth_error(
            "invalid_request", "The authenticated MCP server is the actor: actor_token is not taken.", 400
        )
    targets = set(request.POST.getlist("resource")) | set(request.POST.getlist("audience"))
    target = McpServer.objects.filter(resource=next(iter(targets))).first() if len(targets) == 1 else None
    if target is None:
        record(
            "token.exchanged",
            outcome="deny",
            reason="invalid_target",
            actors=[{"type": "server", "id": actor.name}],
            request=request,
            # The resources as sent, bounded: the request is the caller's.
            detail={"actor": actor.name, "targets": sorted(t[:300] for t in targets)[:10]},
        )
        return oauth_error(
            "invalid_target",
            "Name exactly one registered MCP server by its resource URI (resource and/or audience)."
            if len(targets) != 1
            else f"'{next(iter(targets))}' is not a registered MCP server.",
            400,
        )
    scope = request.POST.get("scope", "").split()

    subject = access_token_by_value(raw_subject)
    decision, exchanged = exchange_token(
        subject=subject if subject is not None and subject.application is not None else None,
        actor=actor,
        target=target,
        scopes=scope or None,
        request=request,
    )
    if exchanged is None:
        code, description = REFUSALS.get(
            decision.reason, ("invalid_grant", f"The subject token cannot be exchanged ({decision.reason}).")
        )
        return oauth_error(code, description, 400)
    response = JsonResponse(
        {
            "access_token": exchanged.value,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": exchanged.expires_in,
            "scope": exchanged.token.scope,
        }
    )
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response
