"""
The Identity Assertion JWT Authorization Grant (ID-JAG) at the token endpoint.

An agent presents, with the RFC 7523 ``jwt-bearer`` grant, an assertion an enterprise IdP signed
for one human, one agent (``client_id``) and one MCP server (``resource``)
(draft-ietf-oauth-identity-assertion-authz-grant; MCP's Enterprise-Managed Authorization). The
console checks it (signature with the IdP's published keys, ``typ``, ``iss`` trusted, ``aud`` =
our issuer, lifetime with a small leeway, ``client_id`` = the authenticated agent, ``resource`` =
a registered MCP server, the ``jti`` used once) and then treats it as the human's consent given
through their IdP: the same policy decision as the consent page, the same ``delegate()``, a token
bound to the delegation and the server. The IdP vouches for who the human is and what they may
ask; the console's policy still decides what they may delegate, and scopes that need an approver
still wait for one.

Only confidential agents may present an ID-JAG (the draft's §9.1 SHOULD, which the MCP SDK
client follows): a public agent uses the authorization code flow, where the human consents.
No refresh token is issued: the IdP controls the session by issuing fresh assertions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OAuthlibRequest

from audit.events import record
from console.roles import is_role_group
from identity.humans import SubjectLinkedElsewhere, claimed_groups, human_for, sync_groups
from identity.keys import KeysUnavailable, signing_key
from identity.models import TrustedIdentityProvider, UsedAssertion
from policies.decisions import decide
from policies.models import Agent, Delegation, McpServer, scopes_of
from policies.oauth.errors import oauth_error
from policies.oauth.resources import server_for_resource, target_error_description
from policies.oauth.scopes import default_scopes
from policies.services import delegate
from policies.tokens import issue_access_token, token_lifetime

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_TYPE = "oauth-id-jag+jwt"
# Claims the console stores or looks up are at most this long (the columns' length).
MAX_CLAIM_LENGTH = 255
GRANT_NAME = "id_jag"
# Clock skew tolerated between the IdP and this console, on exp, nbf and iat.
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ["iss", "sub", "aud", "client_id", "jti", "exp", "iat"]
# ID-JAGs are short-lived (minutes); a longer one is refused, which also bounds how long its jti is kept.
MAX_LIFETIME_SECONDS = 3600


@dataclass
class Refusal(Exception):
    """Why an assertion or request is refused: an RFC 6749 §5.2 error and a reason for the audit."""

    reason: str
    description: str
    error: str = "invalid_grant"
    status: int = 400
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Assertion:
    provider: TrustedIdentityProvider
    claims: dict[str, Any]


def id_jag_grant(request: HttpRequest) -> HttpResponse:
    """The token endpoint's ``jwt-bearer`` grant carrying an ID-JAG."""
    agent: Agent | None = None
    try:
        agent = authenticated_agent(request)
        assertion = verified_assertion(_one(request, "assertion"), agent)
        server = target_server(assertion.claims, request.POST.getlist("resource"))
        scopes = requested_scopes(assertion.claims, request.POST.get("scope"), server)
        with transaction.atomic():
            _use_once(assertion)
            result = _grant(request, agent, server, assertion, scopes)
    except Refusal as refusal:
        result = refusal
    if isinstance(result, Refusal):
        record(
            "id_jag.refused",
            outcome="deny",
            reason=result.reason,
            request=request,
            **{"agent": agent, **result.context},
        )
        headers = {"WWW_Authenticate": 'Basic realm="token"'} if result.status == 401 else {}
        return oauth_error(result.error, result.description, result.status, **headers)
    response = JsonResponse(result)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _one(request: HttpRequest, name: str) -> str:
    values = request.POST.getlist(name)
    if len(values) != 1 or not values[0]:
        raise Refusal("bad_request", f"Exactly one {name} parameter is required.", error="invalid_request")
    return values[0]


def authenticated_agent(request: HttpRequest) -> Agent:
    """The agent, authenticated as DOT authenticates confidential clients (Basic or client_secret_post)."""
    uri, method, body, headers = get_oauthlib_core()._extract_params(request)
    oauth_request = OAuthlibRequest(uri, method, body, headers)
    if oauth2_settings.OAUTH2_VALIDATOR_CLASS().authenticate_client(oauth_request):
        agent = oauth_request.client
        named = request.POST.get("client_id")
        if named and named != agent.client_id:
            raise Refusal(
                "client_mismatch", "client_id differs from the authenticated agent.", "invalid_client"
            )
        return agent
    named = Agent.objects.filter(client_id=request.POST.get("client_id") or "").first()
    if named is not None and named.client_type == Agent.CLIENT_PUBLIC:
        raise Refusal(
            "public_agent",
            "The ID-JAG grant is for confidential agents; a public agent uses the authorization code flow.",
            error="unauthorized_client",
            context={"agent": named},
        )
    raise Refusal("agent_authentication_failed", "Agent authentication failed.", "invalid_client", 401)


def verified_assertion(raw: str, agent: Agent) -> Assertion:
    """The assertion's claims, once every check of the draft's §5.1 (and RFC 7523 §3) passed."""
    try:
        # PyJWT also refuses here what it cannot process: a kid that is not a string, a crit header.
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Refusal("malformed_assertion", "The assertion is not a signed JWT.") from None
    if _media_type(header.get("typ")) != ID_JAG_TYPE:
        raise Refusal("wrong_type", f"The assertion's typ is not {ID_JAG_TYPE}: it is not an ID-JAG.")
    if _holds_nul(unverified):
        # PostgreSQL cannot store a NUL character: refused before anything is looked up or stored.
        raise Refusal("malformed_claim", "The assertion's claims contain a NUL character.")
    issuer = unverified.get("iss")
    provider = (
        TrustedIdentityProvider.objects.filter(issuer=issuer, active=True).first()
        if isinstance(issuer, str) and len(issuer) <= MAX_CLAIM_LENGTH
        else None
    )
    if provider is None:
        raise Refusal("untrusted_issuer", "The assertion's issuer is not a trusted identity provider.")
    context = {"detail": {"issuer": provider.issuer}}
    if header.get("alg") not in provider.algorithm_list:
        raise Refusal(
            "algorithm_not_allowed",
            f"The assertion's alg is not one this identity provider may use ({provider.algorithms}).",
            context=context,
        )
    try:
        key = signing_key(provider, header)
    except KeysUnavailable:
        raise Refusal(
            "idp_keys_unavailable", "The identity provider's keys could not be fetched.", context=context
        ) from None
    if key is None:
        raise Refusal(
            "unknown_signing_key",
            "The identity provider publishes no key matching the assertion.",
            context=context,
        )
    try:
        claims = jwt.decode(
            raw,
            key.key,
            algorithms=[header["alg"]],
            audience=settings.ISSUER,
            issuer=provider.issuer,
            leeway=LEEWAY_SECONDS,
            # One audience, exactly this authorization server: an assertion for several could be
            # played at each of them.
            options={"require": REQUIRED_CLAIMS, "strict_aud": True},
        )
    except jwt.InvalidTokenError as error:
        raise _claim_refusal(error, context) from None
    if int(claims["exp"]) - int(claims["iat"]) > MAX_LIFETIME_SECONDS:  # both checked numeric by PyJWT
        raise Refusal(
            "too_long_lived", f"The assertion lives longer than {MAX_LIFETIME_SECONDS} s.", context=context
        )
    for name in ("sub", "client_id", "jti"):
        if not isinstance(claims[name], str) or not claims[name] or len(claims[name]) > MAX_CLAIM_LENGTH:
            raise Refusal(
                "malformed_claim", f"The assertion's {name} claim is not a usable string.", context=context
            )
    if claims["client_id"] != agent.client_id:
        raise Refusal(
            "client_mismatch",
            "The assertion was issued for another client than the authenticated agent.",
            context={"detail": {"issuer": provider.issuer, "asserted_client_id": claims["client_id"]}},
        )
    if "scope" in claims and not isinstance(claims["scope"], str):
        # Ignoring it would leave the agent's scope parameter unbounded by the IdP.
        raise Refusal(
            "malformed_claim", "The assertion's scope claim is not a space-separated string.", context=context
        )
    return Assertion(provider, claims)


def _media_type(typ: object) -> str | None:
    """``typ`` as a media type without its optional ``application/`` prefix, in lower case
    (RFC 7515 §4.1.9: both spellings name the same type, compared case-insensitively)."""
    if not isinstance(typ, str):
        return None
    typ = typ.lower()
    return typ.removeprefix("application/") if typ.count("/") == 1 else typ


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _claim_refusal(error: jwt.InvalidTokenError, context: dict) -> Refusal:
    if isinstance(error, jwt.ExpiredSignatureError):
        return Refusal("expired", "The assertion has expired.", context=context)
    if isinstance(error, jwt.ImmatureSignatureError):
        return Refusal(
            "not_yet_valid", "The assertion is not valid yet (nbf or iat in the future).", context=context
        )
    if isinstance(error, jwt.InvalidAudienceError):
        return Refusal(
            "wrong_audience",
            f"The assertion's audience is not this authorization server ({settings.ISSUER}).",
            context=context,
        )
    if isinstance(error, jwt.MissingRequiredClaimError):
        return Refusal("missing_claim", f"The assertion lacks the {error.claim} claim.", context=context)
    if isinstance(error, jwt.InvalidSignatureError):
        return Refusal("bad_signature", "The assertion's signature does not verify.", context=context)
    return Refusal("malformed_assertion", f"The assertion's claims are malformed: {error}.", context=context)


def target_server(claims: Mapping[str, Any], resources: list[str]) -> McpServer:
    """The MCP server the token is for: the one the assertion names (the resource parameter may
    choose among several it names, never add one)."""
    asserted = claims.get("resource")
    asserted = [asserted] if isinstance(asserted, str) else asserted
    if not isinstance(asserted, list) or not asserted or not all(isinstance(r, str) for r in asserted):
        raise Refusal(
            "missing_resource", "The assertion names no resource; a token is bound to one MCP server."
        )
    if len(resources) > 1:
        raise Refusal("several_resources", target_error_description(resources), error="invalid_target")
    if resources and resources[0] not in asserted:
        raise Refusal(
            "resource_not_asserted",
            "The resource parameter is not a resource the assertion names.",
            error="invalid_target",
        )
    if not resources and len(asserted) != 1:
        raise Refusal(
            "several_resources",
            "The assertion names several resources: choose one with resource.",
            "invalid_target",
        )
    wanted = resources[0] if resources else asserted[0]
    server = server_for_resource([wanted])
    if server is None:
        raise Refusal("unknown_resource", target_error_description([wanted]), error="invalid_target")
    return server


def requested_scopes(claims: Mapping[str, Any], scope_param: str | None, server: McpServer) -> set[str]:
    """What is asked: the scope parameter within the assertion's scope claim (RFC 6749 §3.3: never
    more than the IdP authorized), else the claim, else the server's default scopes."""
    asserted = scopes_of(claims["scope"]) if "scope" in claims else None  # a string: verified_assertion
    requested = scopes_of(scope_param or "")
    if requested and asserted is not None:
        requested &= asserted
        if not requested:
            raise Refusal(
                "scope_not_asserted", "None of the requested scopes is in the assertion.", "invalid_scope"
            )
        return requested
    if requested or asserted:
        return requested or asserted
    return set(default_scopes(server))


def _use_once(assertion: Assertion) -> None:
    """Remember the assertion's ``jti`` until it expires; a second use is refused (across workers:
    the unique constraint decides)."""
    claims = assertion.claims
    expires = datetime.fromtimestamp(int(claims["exp"]), tz=UTC) + timedelta(seconds=LEEWAY_SECONDS)
    UsedAssertion.objects.filter(expires__lt=timezone.now()).delete()
    try:
        with transaction.atomic():
            UsedAssertion.objects.create(issuer=assertion.provider.issuer, jti=claims["jti"], expires=expires)
    except IntegrityError:
        raise Refusal(
            "replayed",
            "The assertion has already been used (its jti was seen before).",
            context={"detail": {"issuer": assertion.provider.issuer, "jti": claims["jti"]}},
        ) from None


def policy_groups(provider: TrustedIdentityProvider) -> dict[str, list[Group]]:
    mapping: dict[str, list[Group]] = {}
    for row in provider.group_mappings.select_related("group"):
        # clean() refuses role mappings; one made around it (ORM, a renamed group) is still ignored.
        if not is_role_group(row.group):
            mapping.setdefault(row.idp_group, []).append(row.group)
    return mapping


def _grant(
    request: HttpRequest, agent: Agent, server: McpServer, assertion: Assertion, scopes: set[str]
) -> dict[str, Any] | Refusal:
    """Everything after the assertion checked out: the human, the delegation, the token.

    A refusal here is returned, not raised, so that what happened stays committed: the assertion
    is spent, the human exists, and a delegation waiting for an approver stays waiting.
    """
    provider, claims = assertion.provider, assertion.claims
    try:
        human = human_for(provider.issuer, claims["sub"], claims, via=GRANT_NAME, provider=provider)
    except SubjectLinkedElsewhere:
        return Refusal(
            "subject_linked_elsewhere",
            "The assertion's subject is linked to this issuer through another door; "
            "this identity provider cannot act for it.",
            context={"detail": {"issuer": provider.issuer, "subject": claims["sub"]}},
        )
    groups = sync_groups(human, claimed_groups(claims, provider.groups_claim), policy_groups(provider))
    about = {"human": human, "server": server}
    detail = {"issuer": provider.issuer, "jti": claims["jti"], "requested": sorted(scopes), "groups": groups}
    decision = decide(agent=agent, server=server, human=human, scopes=scopes)
    if not decision.allowed:
        return Refusal(
            decision.reason,
            f"The policy refuses this human's delegation of these scopes to this agent ({decision.reason}).",
            error="invalid_scope",
            context={**about, "detail": {**detail, "refused": dict(decision.refused)}},
        )
    delegation = _delegation_for(request, human, agent, server, decision.scopes, decision.needs_approval)
    if delegation.status == Delegation.Status.PENDING:
        waiting = ", ".join(sorted(decision.needs_approval))
        return Refusal(
            "approval_required",
            f"{waiting} need an approver's yes: delegation #{delegation.pk} waits for one. "
            "Present a new assertion once it is approved.",
            context={**about, "delegation": delegation, "detail": detail},
        )
    return _mint(request, agent, server, human, delegation, decision.scopes, detail)


def _delegation_for(
    request: HttpRequest,
    human: AbstractBaseUser,
    agent: Agent,
    server: McpServer,
    scopes: frozenset[str],
    needs_approval: frozenset[str],
) -> Delegation:
    """The delegation the token hangs off: the live one if it already covers ``scopes`` (an
    approver may have approved some of them), else a new consent through ``delegate()``, pending
    when a scope needs an approver. Asking again while one waits does not stack requests."""
    triple = {"human": human, "agent": agent, "server": server}
    live = Delegation.objects.filter(status=Delegation.Status.APPROVED, **triple).first()
    if (
        live is not None
        and decide(agent=agent, server=server, delegation=live).allowed
        and scopes <= live.scopes
    ):
        return live
    if needs_approval:
        waiting = Delegation.objects.filter(status=Delegation.Status.PENDING, **triple).first()
        if waiting is not None and waiting.scopes == scopes:
            return waiting
    return delegate(human, agent, server, scopes, request=request)


def _mint(
    request: HttpRequest,
    agent: Agent,
    server: McpServer,
    human: AbstractBaseUser,
    delegation: Delegation,
    scopes: frozenset[str],
    detail: dict[str, Any],
) -> dict[str, Any] | Refusal:
    decision = decide(agent=agent, server=server, delegation=delegation)
    usable = decision.scopes & scopes if decision.allowed else frozenset()
    if not usable:
        return Refusal(
            decision.reason if not decision.allowed else "no_usable_scope",
            "The delegation allows no new token for these scopes.",
            context={"human": human, "server": server, "delegation": delegation, "detail": detail},
        )
    lifetime = token_lifetime(agent)
    expires = timezone.now() + timedelta(seconds=lifetime)
    issued = issue_access_token(agent, human, delegation, usable, expires, server=server)
    token = issued.token
    record(
        "token.issued",
        outcome="allow",
        human=human,
        agent=agent,
        server=server,
        delegation=delegation,
        token=token,
        request=request,
        detail={**detail, "grant": GRANT_NAME, "scope": token.scope},
    )
    return {
        "access_token": issued.value,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": token.scope,
    }
