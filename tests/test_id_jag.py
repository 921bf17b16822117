"""The ID-JAG grant (RFC 7523 jwt-bearer carrying an Identity Assertion JWT Authorization Grant):
an enterprise IdP stand-in signs real JWTs with its own RSA key and serves its JWKS over loopback;
agents present them at the console's token endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.test import Client
from jwcrypto import jwk
from mcp import ClientSession
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthToken

from audit.models import AuditEvent
from console.roles import Role
from identity.grant import JWT_BEARER
from identity.models import (
    ExternalIdentity,
    GroupMapping,
    TrustedIdentityProvider,
    UsedAssertion,
    jwks_url_problem,
)
from policies.models import AccessToken, Agent, Delegation, DelegationPolicy, ToolAction
from policies.services import approve_delegation
from tests.api_support import api_as, person
from tests.conftest import FORM, REDIRECT_URI, allow_delegation, form, introspect, make_server
from tests.idp_standin import running_idp
from tests.live_mcp import serving_protected
from tests.support import free_loopback_port

SECRET = "agent-secret-for-id-jag-tests"
SUBJECT = "00u1dana"


@pytest.fixture
def idp(db):
    with running_idp() as idp:
        yield idp


@pytest.fixture
def provider(idp):
    """The IdP, trusted by the console; its "engineering" group is the policy group "staff"."""
    return idp.trust(mappings={"engineering": "staff"})


@pytest.fixture
def staff_policy(calendar):
    """The staff group may delegate reading events at once; creating them needs an approver."""
    allow_delegation("staff", [], calendar.server, ["list_events:read", "create_event:write"])
    policy = DelegationPolicy.objects.get(group__name="staff")
    policy.approval_required.add(ToolAction.objects.get(tool__name="create_event", name="write"))
    return policy


def confidential_agent(name: str = "Enterprise agent") -> Agent:
    return Agent.objects.create(
        name=name,
        client_type=Agent.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        client_secret=SECRET,  # hashed on save
        registration_source=Agent.RegistrationSource.MANUAL,
    )


@pytest.fixture
def agent(db) -> Agent:
    return confidential_agent()


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def present(assertion: str | list[str], agent: Agent, secret: str = SECRET, **params: str):
    """The agent's token request: the ID-JAG as the jwt-bearer grant, with HTTP Basic client auth."""
    data = {"grant_type": JWT_BEARER, "assertion": assertion, **params}
    return Client().post("/oauth/token/", form(data), FORM, HTTP_AUTHORIZATION=basic(agent.client_id, secret))


def id_jag_for(idp, agent: Agent, calendar, **overrides) -> str:
    claims = {
        "sub": SUBJECT,
        "client_id": agent.client_id,
        "audience": settings.ISSUER,
        "resource": calendar.resource,
        "scope": "list_events:read",
        "groups": ["engineering"],
        "preferred_username": "dana",
        "email": "dana@acme.example",
        **overrides,
    }
    return idp.id_jag(**claims)


def refusal_of(response) -> tuple[str, str]:
    assert response.status_code in (400, 401), response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    return body["error"], body["error_description"]


def refused_event() -> AuditEvent:
    return AuditEvent.objects.get(event_type="id_jag.refused")


# --- Accepted --------------------------------------------------------------------------------------


def test_an_id_jag_gets_a_token_under_a_new_delegation_for_the_asserted_human(
    idp, provider, agent, calendar, staff_policy
):
    response = present(id_jag_for(idp, agent, calendar), agent)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "list_events:read"
    assert "refresh_token" not in body  # the IdP controls the session with fresh assertions
    # The human is created just in time, known by issuer + subject, in the mapped policy group.
    dana = ExternalIdentity.objects.get(issuer=idp.issuer, subject=SUBJECT).user
    assert dana.username == "dana" and not dana.has_usable_password()
    assert list(dana.groups.values_list("name", flat=True)) == ["staff"]
    delegation = Delegation.objects.get(human=dana, agent=agent, server=calendar.server)
    assert delegation.status == Delegation.Status.APPROVED
    assert delegation.scopes == {"list_events:read"}
    token = AccessToken.objects.get(delegation=delegation)
    assert token.resource == [calendar.resource] and token.scope == "list_events:read"
    # The MCP server sees the human and the agent, and the tool call is allowed.
    answer = introspect(calendar, body["access_token"], tool="list_events", action="read").json()
    assert answer["active"] and answer["decision"]["allowed"]
    assert (answer["sub"], answer["username"], answer["client_id"]) == (str(dana.pk), "dana", agent.client_id)
    issued = AuditEvent.objects.get(event_type="token.issued")
    assert issued.detail["grant"] == "id_jag" and issued.detail["issuer"] == idp.issuer
    assert (issued.human_id, issued.agent_client_id, issued.delegation_id) == (
        dana.pk,
        agent.client_id,
        delegation.pk,
    )
    assert AuditEvent.objects.filter(event_type="consent.granted", delegation_id=delegation.pk).exists()


def test_the_same_subject_is_the_same_human_and_a_local_account_is_never_taken_over(
    idp, provider, agent, calendar, staff_policy
):
    local_admin = User.objects.create_user("dana", password="break-glass-password-1")

    first = present(id_jag_for(idp, agent, calendar), agent)
    second = present(id_jag_for(idp, agent, calendar), agent)

    assert first.status_code == second.status_code == 200
    (link,) = ExternalIdentity.objects.all()
    assert link.user != local_admin and link.user.username == "dana-2"
    assert Delegation.objects.filter(human=link.user).count() == 1
    assert not Delegation.objects.filter(human=local_admin).exists()


def test_scopes_needing_an_approver_wait_for_one_then_a_new_assertion_gets_them(
    idp, provider, agent, calendar, staff_policy
):
    asking = {"scope": "list_events:read create_event:write"}

    waiting = present(id_jag_for(idp, agent, calendar, **asking), agent)
    again = present(id_jag_for(idp, agent, calendar, **asking), agent)

    error, description = refusal_of(waiting)
    assert error == "invalid_grant" and "create_event:write" in description and "approver" in description
    assert refusal_of(again)[0] == "invalid_grant"
    (pending,) = Delegation.objects.filter(status=Delegation.Status.PENDING)  # asking twice does not stack
    assert pending.scopes == {"list_events:read", "create_event:write"}
    assert not AccessToken.objects.exists()
    assert AuditEvent.objects.filter(event_type="id_jag.refused", reason="approval_required").count() == 2

    approve_delegation(pending, by=User.objects.create_user("approver"))
    granted = present(id_jag_for(idp, agent, calendar, **asking), agent)

    assert granted.status_code == 200, granted.content
    assert granted.json()["scope"] == "create_event:write list_events:read"


def test_a_human_outside_every_mapped_group_is_refused_by_the_policy(
    idp, provider, agent, calendar, staff_policy
):
    response = present(id_jag_for(idp, agent, calendar, groups=["sales"]), agent)

    error, description = refusal_of(response)
    assert error == "invalid_scope" and "scope_not_delegable" in description
    assert not Delegation.objects.exists() and not AccessToken.objects.exists()
    assert refused_event().reason == "scope_not_delegable"


def test_leaving_the_idp_group_removes_the_policy_group_at_the_next_assertion(
    idp, provider, agent, calendar, staff_policy
):
    present(id_jag_for(idp, agent, calendar), agent)
    dana = ExternalIdentity.objects.get().user
    hand_given = Group.objects.create(name="hand-given")
    dana.groups.add(hand_given)

    response = present(id_jag_for(idp, agent, calendar, groups=[]), agent)

    # No new token: the delegation stays, but staff's policy no longer covers her.
    assert refusal_of(response)[0] == "invalid_scope"
    assert set(dana.groups.values_list("name", flat=True)) == {"hand-given"}  # unmapped groups stay


def test_the_metadata_advertises_the_jwt_bearer_grant_and_the_id_jag_profile(db, client):
    metadata = client.get("/.well-known/oauth-authorization-server").json()

    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [
        "urn:ietf:params:oauth:grant-profile:id-jag"
    ]


# --- Refused: the assertion --------------------------------------------------------------------


def test_an_assertion_for_another_audience_is_refused(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar, audience="https://other-as.example"), agent)

    assert refusal_of(response) == (
        "invalid_grant",
        f"The assertion's audience is not this authorization server ({settings.ISSUER}).",
    )
    assert refused_event().reason == "wrong_audience"
    assert not AccessToken.objects.exists() and not ExternalIdentity.objects.exists()


def test_an_expired_assertion_is_refused(idp, provider, agent, calendar, staff_policy):
    long_ago = int(time.time()) - 3600
    response = present(id_jag_for(idp, agent, calendar, iat=long_ago, exp=long_ago + 300), agent)

    assert refusal_of(response) == ("invalid_grant", "The assertion has expired.")
    assert refused_event().reason == "expired"
    assert not AccessToken.objects.exists()


def test_an_assertion_presented_twice_is_refused_the_second_time(
    idp, provider, agent, calendar, staff_policy
):
    assertion = id_jag_for(idp, agent, calendar)

    first = present(assertion, agent)
    second = present(assertion, agent)

    assert first.status_code == 200
    assert refusal_of(second) == (
        "invalid_grant",
        "The assertion has already been used (its jti was seen before).",
    )
    assert refused_event().reason == "replayed"
    assert AccessToken.objects.count() == 1
    assert UsedAssertion.objects.count() == 1


def test_an_assertion_from_an_untrusted_issuer_is_refused(idp, provider, agent, calendar, staff_policy):
    with running_idp() as stranger:  # a real IdP too, with its own keys, that nobody trusted
        response = present(id_jag_for(stranger, agent, calendar), agent)

    assert refusal_of(response) == (
        "invalid_grant",
        "The assertion's issuer is not a trusted identity provider.",
    )
    assert refused_event().reason == "untrusted_issuer"
    assert stranger.jwks_fetches == idp.jwks_fetches == 0
    assert not AccessToken.objects.exists() and not ExternalIdentity.objects.exists()


def test_an_assertion_for_another_client_is_refused(idp, provider, agent, calendar, staff_policy):
    other = confidential_agent("Other agent")

    response = present(id_jag_for(idp, agent, calendar), other)

    assert refusal_of(response) == (
        "invalid_grant",
        "The assertion was issued for another client than the authenticated agent.",
    )
    event = refused_event()
    assert (event.reason, event.agent_client_id) == ("client_mismatch", other.client_id)
    assert not AccessToken.objects.exists()


def test_an_assertion_signed_with_another_key_is_refused(idp, provider, agent, calendar, staff_policy):
    impostor = jwk.JWK.generate(kty="RSA", size=2048, kid=idp.key.key_id)  # same kid, other key

    response = present(id_jag_for(idp, agent, calendar, key=impostor), agent)

    assert refusal_of(response) == ("invalid_grant", "The assertion's signature does not verify.")
    assert refused_event().reason == "bad_signature"


def test_a_jwt_that_is_not_an_id_jag_is_refused(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar, typ="JWT"), agent)  # e.g. an ID token

    assert refusal_of(response) == (
        "invalid_grant",
        "The assertion's typ is not oauth-id-jag+jwt: it is not an ID-JAG.",
    )


def test_an_assertion_for_an_unregistered_resource_is_refused(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar, resource="https://unknown.example/mcp"), agent)

    assert refusal_of(response) == (
        "invalid_target",
        "The resource 'https://unknown.example/mcp' is not a registered, active MCP server.",
    )
    assert refused_event().reason == "unknown_resource"


def test_the_resource_parameter_cannot_name_a_server_the_assertion_does_not(
    idp, provider, agent, calendar, mail, staff_policy
):
    response = present(id_jag_for(idp, agent, calendar), agent, resource=mail.resource)

    assert refusal_of(response)[0] == "invalid_target"
    assert not AccessToken.objects.exists()


def test_scopes_beyond_the_assertion_are_not_granted(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar), agent, scope="create_event:write")

    assert refusal_of(response) == ("invalid_scope", "None of the requested scopes is in the assertion.")


def test_a_public_agent_may_not_present_an_id_jag(idp, provider, calendar, staff_policy):
    public = Agent.objects.create(
        name="Public agent",
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
    )
    data = {
        "grant_type": JWT_BEARER,
        "assertion": id_jag_for(idp, public, calendar),
        "client_id": public.client_id,
    }

    response = Client().post("/oauth/token/", form(data), FORM)

    error, description = refusal_of(response)
    assert error == "unauthorized_client" and "confidential" in description


def test_a_wrong_agent_secret_is_invalid_client(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar), agent, secret="wrong-secret")

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert not UsedAssertion.objects.exists()  # the assertion was not even looked at


# --- End to end: the official MCP SDK client ------------------------------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens


def notes_server(**auth) -> MCPServer:
    mcp = MCPServer("notes", **auth)

    @mcp.tool()
    def whoami() -> str:
        """The human the calling agent acts for, as the console named them."""
        token = get_access_token()
        return str((token.claims or {}).get("username", "")) if token else ""

    return mcp


@pytest.mark.timeout(90)
def test_the_sdk_enterprise_client_gets_a_token_with_an_id_jag_and_calls_the_protected_server(
    live_console, idp, agent
):
    port = free_loopback_port()
    notes = make_server("notes", f"http://127.0.0.1:{port}/mcp", {"whoami": ("low", ["read"])})
    allow_delegation("staff", [], notes.server, ["whoami:read"])
    idp.trust(mappings={"engineering": "staff"})
    asked: list[tuple[str, str]] = []

    async def assertion_provider(audience: str, resource: str) -> str:
        """What the agent's IdP integration does: get an ID-JAG for this AS and this MCP server."""
        asked.append((audience, resource))
        return idp.id_jag(
            sub=SUBJECT,
            client_id=agent.client_id,
            audience=audience,
            resource=resource,
            scope="whoami:read",
            groups=["engineering"],
            preferred_username="dana",
        )

    async def session() -> str:
        auth = IdentityAssertionOAuthProvider(
            server_url=notes.resource,
            storage=MemoryStorage(),
            client_id=agent.client_id,
            client_secret=SECRET,
            issuer=live_console,
            assertion_provider=assertion_provider,
            token_endpoint_auth_method="client_secret_basic",
        )
        async with httpx2.AsyncClient(auth=auth, timeout=20) as http:
            async with streamable_http_client(notes.resource, http_client=http) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=20) as mcp_session:
                    await mcp_session.initialize()
                    result = await mcp_session.call_tool("whoami", {})
                    return result.content[0].text

    with serving_protected(notes_server, live_console, notes, {"whoami": "whoami:read"}):
        who = asyncio.run(session())

    assert who == "dana"
    assert asked == [(live_console, notes.resource)]
    dana = ExternalIdentity.objects.get(issuer=idp.issuer, subject=SUBJECT).user
    issued = AuditEvent.objects.get(event_type="token.issued", human_id=dana.pk)
    assert issued.detail["grant"] == "id_jag" and issued.server_resource == notes.resource
    allowed = AuditEvent.objects.get(event_type="tool_call.decision", outcome="allow")
    assert (allowed.human_id, allowed.agent_client_id, allowed.tool) == (dana.pk, agent.client_id, "whoami")


# --- The IdP's keys and its configuration -----------------------------------------------------------


def test_a_rotated_idp_key_is_fetched_again_and_accepted(idp, provider, agent, calendar, staff_policy):
    assert present(id_jag_for(idp, agent, calendar), agent).status_code == 200
    idp.key = jwk.JWK.generate(kty="RSA", size=2048, kid="rotated", use="sig")

    response = present(id_jag_for(idp, agent, calendar), agent)

    assert response.status_code == 200, response.content
    assert idp.jwks_fetches == 2  # cached once, fetched again for the unknown kid


def test_inline_keys_need_no_fetch(idp, agent, calendar, staff_policy):
    provider = TrustedIdentityProvider(name="inline", issuer=idp.issuer, jwks=idp.public_jwks())
    provider.full_clean()
    provider.save()
    GroupMapping.objects.create(
        provider=provider, idp_group="engineering", group=Group.objects.get(name="staff")
    )

    response = present(id_jag_for(idp, agent, calendar), agent)

    assert response.status_code == 200, response.content
    assert idp.jwks_fetches == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"jwks_url": "http://idp.acme.example/jwks"}, "https"),
        (
            {
                "jwks_url": "https://idp.acme.example/jwks",
                "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
            },
            "not both",
        ),
        ({"jwks": "private"}, "private key"),
        ({"jwks_url": "https://idp.acme.example/jwks", "algorithms": "HS256"}, "Choose among"),
        ({"jwks_url": "https://idp.acme.example/jwks", "algorithms": "none"}, "Choose among"),
    ],
)
def test_an_idp_configuration_that_would_weaken_the_checks_is_refused(db, fields, message):
    if fields.get("jwks") == "private":
        fields = {"jwks": {"keys": [json.loads(jwk.JWK.generate(kty="RSA", size=2048).export_private())]}}
    provider = TrustedIdentityProvider(name="acme", issuer="https://idp.acme.example", **fields)

    with pytest.raises(ValidationError) as refused:
        provider.full_clean()

    assert message in str(refused.value)


def test_an_idp_group_cannot_map_to_a_console_role(db, idp):
    provider = idp.trust()
    mapping = GroupMapping(
        provider=provider,
        idp_group="it-admins",
        group=Group.objects.get_or_create(name=Role.SECURITY_ADMIN.value)[0],
    )

    with pytest.raises(ValidationError, match="Console roles are not granted by assertions"):
        mapping.full_clean()


def test_an_admin_trusts_an_idp_through_the_api_and_its_assertions_are_honoured(
    idp, agent, calendar, staff_policy
):
    admin = api_as(person("sec-admin", Role.SECURITY_ADMIN))
    body = {
        "name": "acme",
        "issuer": idp.issuer,
        "jwks_url": idp.jwks_url,
        "algorithms": "RS256",
        "group_mappings": [{"idp_group": "engineering", "group": "staff"}],
    }

    created = admin.post("/api/identity/identity-providers/", body, format="json")
    response = present(id_jag_for(idp, agent, calendar), agent)

    assert created.status_code == 201, created.content
    assert created.json()["group_mappings"] == [{"idp_group": "engineering", "group": "staff"}]
    assert response.status_code == 200, response.content
    links = admin.get("/api/identity/external-identities/").json()["results"]
    assert [(link["subject"], link["human"]) for link in links] == [(SUBJECT, "dana")]


def test_the_api_refuses_an_idp_that_maps_a_role_or_fetches_keys_over_http(db):
    admin = api_as(person("sec-admin", Role.SECURITY_ADMIN))
    Group.objects.get_or_create(name=Role.SECURITY_ADMIN.value)
    body = {
        "name": "acme",
        "issuer": "https://idp.acme.example",
        "jwks_url": "http://idp.acme.example/jwks",
        "group_mappings": [{"idp_group": "it", "group": Role.SECURITY_ADMIN.value}],
    }

    response = admin.post("/api/identity/identity-providers/", body, format="json")

    assert response.status_code == 400
    errors = response.json()
    assert "group_mappings" in errors
    assert not TrustedIdentityProvider.objects.exists()
    body["group_mappings"] = []
    response = admin.post("/api/identity/identity-providers/", body, format="json")
    assert response.status_code == 400 and "https" in str(response.json())


def test_an_assertion_living_longer_than_an_hour_is_refused(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar, lifetime=10**9), agent)

    assert refusal_of(response) == ("invalid_grant", "The assertion lives longer than 3600 s.")
    assert not UsedAssertion.objects.exists()


def unsigned(header: dict, claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


@pytest.mark.parametrize(
    ("assertion", "expected"),
    [
        ("not-a-jwt", ("invalid_grant", "The assertion is not a signed JWT.")),
        ("", ("invalid_request", "Exactly one assertion parameter is required.")),
        (["a.b.c", "d.e.f"], ("invalid_request", "Exactly one assertion parameter is required.")),
        (
            "alg-none",
            ("invalid_grant", "The assertion's alg is not one this identity provider may use (RS256 ES256)."),
        ),
        ("iss-list", ("invalid_grant", "The assertion's issuer is not a trusted identity provider.")),
    ],
)
def test_malformed_assertions_get_a_clear_error_and_change_nothing(
    idp, provider, agent, calendar, staff_policy, assertion, expected
):
    header = {"alg": "none", "typ": "oauth-id-jag+jwt"}
    if assertion == "alg-none":
        assertion = unsigned(header, {"iss": idp.issuer, "sub": SUBJECT, "aud": settings.ISSUER})
    elif assertion == "iss-list":
        assertion = unsigned(header, {"iss": [idp.issuer], "sub": SUBJECT})

    response = present(assertion, agent)

    assert refusal_of(response) == expected
    assert not AccessToken.objects.exists() and not UsedAssertion.objects.exists()


# --- Odd input is refused, never a 500 (review-identity D1, D2, D5) --------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"kid": ["x"]},  # PyJWT refuses a kid that is not a string
        {"kid": {"a": 1}},
        {"crit": ["exp"]},  # an extension this console does not understand
    ],
    ids=["kid-list", "kid-object", "crit"],
)
def test_a_header_with_a_non_string_kid_or_a_crit_member_is_refused(
    idp, provider, agent, calendar, staff_policy, header
):
    # The IdP's keys are cached, as after any earlier assertion.
    assert present(id_jag_for(idp, agent, calendar), agent).status_code == 200
    odd = unsigned({"alg": "RS256", "typ": "oauth-id-jag+jwt", **header}, {"iss": idp.issuer}) + "c2ln"

    response = present(odd, agent)

    assert refusal_of(response) == ("invalid_grant", "The assertion is not a signed JWT.")
    assert refused_event().reason == "malformed_assertion"


@pytest.mark.parametrize("claim", ["iss", "sub", "jti", "client_id"])
def test_a_nul_character_in_a_claim_is_refused_before_anything_is_looked_up_or_stored(
    idp, provider, agent, calendar, staff_policy, claim
):
    value = {"iss": idp.issuer, "client_id": agent.client_id}.get(claim, "a") + "\x00b"
    response = present(id_jag_for(idp, agent, calendar, **{claim: value}), agent)

    assert refusal_of(response) == ("invalid_grant", "The assertion's claims contain a NUL character.")
    assert not ExternalIdentity.objects.exists() and not UsedAssertion.objects.exists()
    assert not AccessToken.objects.exists()


def test_an_issuer_longer_than_any_trusted_one_is_untrusted(idp, provider, agent, calendar, staff_policy):
    response = present(id_jag_for(idp, agent, calendar, iss=idp.issuer + "x" * 300), agent)

    assert refusal_of(response)[0] == "invalid_grant"
    assert refused_event().reason == "untrusted_issuer"


def test_a_scope_claim_that_is_not_a_string_is_refused_not_ignored(idp, provider, agent, calendar):
    # Were the claim ignored, the agent's scope parameter would not be bounded by the IdP.
    allow_delegation("staff", [], calendar.server, ["list_events:read", "create_event:write"])
    assertion = id_jag_for(idp, agent, calendar, scope=["list_events:read"])

    response = present(assertion, agent, scope="list_events:read create_event:write")

    assert refusal_of(response) == (
        "invalid_grant",
        "The assertion's scope claim is not a space-separated string.",
    )
    assert not AccessToken.objects.exists()


def test_an_application_prefixed_typ_is_accepted(idp, provider, agent, calendar, staff_policy):
    # RFC 7515 §4.1.9: "application/" may be written, and media types compare case-insensitively.
    response = present(id_jag_for(idp, agent, calendar, typ="Application/OAuth-ID-JAG+JWT"), agent)

    assert response.status_code == 200, response.content


# --- Who may act for whom (review-identity D4, D12) ------------------------------------------------


def test_an_idp_cannot_be_trusted_with_the_consoles_sso_issuer(db, settings):
    settings.OIDC_OP_ISSUER = "https://sso.acme.example"
    keys = {"keys": [json.loads(jwk.JWK.generate(kty="RSA", size=2048, kid="f").export_public())]}
    provider = TrustedIdentityProvider(name="forged", issuer=settings.OIDC_OP_ISSUER, jwks=keys)

    with pytest.raises(ValidationError, match="SSO issuer"):
        provider.full_clean()

    admin = api_as(person("sec-admin", Role.SECURITY_ADMIN))
    body = {"name": "forged", "issuer": settings.OIDC_OP_ISSUER, "jwks": keys, "algorithms": "RS256"}
    response = admin.post("/api/identity/identity-providers/", body, format="json")
    assert response.status_code == 400 and "SSO issuer" in str(response.json())
    assert not TrustedIdentityProvider.objects.exists()


def test_a_trusted_idp_does_not_inherit_subjects_another_door_linked(
    idp, agent, calendar, staff_policy, settings
):
    """Even with the same issuer string (the SSO's, set before SSO was configured, or a removed
    IdP's), a trusted IdP cannot sign assertions for a human it did not link."""
    victim = person("victim-admin", Role.SECURITY_ADMIN)
    ExternalIdentity.objects.create(issuer=idp.issuer, subject="00uVICTIM", user=victim)  # by SSO
    idp.trust(mappings={"engineering": "staff"})

    response = present(id_jag_for(idp, agent, calendar, sub="00uVICTIM"), agent)

    assert refusal_of(response)[0] == "invalid_grant"
    assert refused_event().reason == "subject_linked_elsewhere"
    assert not AccessToken.objects.exists() and not Delegation.objects.exists()
    assert not victim.groups.filter(name="staff").exists()


def test_a_role_mapping_made_around_the_checks_grants_no_role(idp, agent, calendar, staff_policy):
    provider = idp.trust(mappings={"engineering": "staff"})
    role = Group.objects.get_or_create(name=Role.SECURITY_ADMIN.value)[0]
    GroupMapping.objects.create(provider=provider, idp_group="engineering", group=role)  # no clean()

    assert present(id_jag_for(idp, agent, calendar), agent).status_code == 200

    dana = ExternalIdentity.objects.get().user
    assert list(dana.groups.values_list("name", flat=True)) == ["staff"]


def test_a_username_taken_between_the_check_and_the_insert_gets_the_next_free_one(
    idp, provider, agent, calendar, staff_policy, monkeypatch
):
    """Two subjects with the same preferred_username provisioned at the same moment: the loser of
    the race is given the next free username, not a 500."""
    import identity.humans

    User.objects.create_user("dana")
    free_username = identity.humans._free_username
    answers = iter(["dana"])  # what the other request's check saw, before "dana" was taken
    monkeypatch.setattr(
        identity.humans, "_free_username", lambda wanted: next(answers, None) or free_username(wanted)
    )

    response = present(id_jag_for(idp, agent, calendar), agent)

    assert response.status_code == 200, response.content
    assert ExternalIdentity.objects.get().user.username == "dana-2"


# --- The IdP's keys: failures, addresses (review-identity D6, D9) ----------------------------------


def test_a_failing_jwks_url_is_fetched_once_per_refetch_window(idp, agent, calendar, staff_policy):
    hits: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_error(503)

        def log_message(self, *args) -> None:
            pass

    down = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=down.serve_forever, daemon=True).start()
    try:
        provider = TrustedIdentityProvider(
            name="down", issuer=idp.issuer, jwks_url=f"http://127.0.0.1:{down.server_address[1]}/jwks.json"
        )
        provider.full_clean()
        provider.save()
        refusals = [refusal_of(present(id_jag_for(idp, agent, calendar), agent)) for _ in range(4)]
    finally:
        down.shutdown()
        down.server_close()

    assert {refusal for refusal in refusals} == {
        ("invalid_grant", "The identity provider's keys could not be fetched.")
    }
    assert len(hits) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "https://10.0.0.5/jwks",
        "https://[fd00::5]/jwks",
        "https://[::ffff:127.0.0.1]/jwks",  # loopback, spelt as IPv4-mapped IPv6
        "http://127.0.0.1:8080/jwks",  # loopback: development and tests only
        "https://localhost/jwks",
    ],
)
def test_a_jwks_url_on_a_private_link_local_or_loopback_address_is_refused_in_production(db, settings, url):
    settings.IDENTITY_ALLOW_LOOPBACK_JWKS = False
    provider = TrustedIdentityProvider(name="p", issuer="https://idp.acme.example", jwks_url=url)

    with pytest.raises(ValidationError, match="not fetched from private"):
        provider.full_clean()


def test_a_jwks_url_is_judged_again_at_fetch_time_by_the_addresses_its_name_resolves_to(db, settings):
    """clean() can judge only literal addresses and loopback names; the fetch resolves the name
    and refuses one that resolves inside: here this machine's own name (loopback or private)."""
    settings.IDENTITY_ALLOW_LOOPBACK_JWKS = False
    url = f"https://{socket.gethostname()}/jwks.json"

    assert jwks_url_problem(url, resolve=False) is None
    assert jwks_url_problem(url, resolve=True) in (
        "Keys are not fetched from private, link-local, loopback or reserved addresses.",
        f"{socket.gethostname()} does not resolve.",
    )
