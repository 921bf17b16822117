"""Token exchange (RFC 8693) between MCP servers: the calendar server exchanges the agent's token
for a token bound to the drive server, for the same human and agent, within her own delegation
on the drive server and the hop policy; the chain shows in ``act`` and in the audit trail, and
revoking anything up the chain ends every token below it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from console.roles import Role
from policies.discovery import mint_discovery_token
from policies.models import AccessToken, Delegation, DelegationPolicy, ExchangePolicy, ToolAction
from policies.policy_file import PolicyError, apply, dump, export, parse
from policies.revocation import (
    revoke_agent_tokens,
    revoke_delegation,
    revoke_human_delegations,
    revoke_server_delegations,
    revoke_token,
)
from policies.services import set_agent_status
from policies.tokens import access_token_by_value
from tests.api_support import api_as, person
from tests.conftest import FORM, RegisteredServer, allow_delegation, form, introspect, make_server

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def drive(alice) -> RegisteredServer:
    """Server B: files to read and write, all of which alice may delegate."""
    server = make_server("drive", "https://drive.example.com/mcp", {"files": ("low", ["read", "write"])})
    allow_delegation("drivers", [alice], server.server, ["files:read", "files:write"])
    return server


@pytest.fixture
def archive(alice) -> RegisteredServer:
    """Server C, for chains of two hops."""
    server = make_server("archive", "https://archive.example.com/mcp", {"boxes": ("low", ["read"])})
    allow_delegation("archivists", [alice], server.server, ["boxes:read"])
    return server


def hop(source: RegisteredServer, target: RegisteredServer, *scopes: str) -> ExchangePolicy:
    policy = ExchangePolicy.objects.create(source=source.server, target=target.server)
    for scope in scopes:
        tool, action = scope.split(":")
        policy.scopes.add(ToolAction.objects.get(tool__server=target.server, tool__name=tool, name=action))
    return policy


def exchange(actor: RegisteredServer, subject: str, target: str, **extra: str):
    data = {
        "grant_type": GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": target,
        **extra,
    }
    return Client().post("/oauth/token/", form(data), FORM, HTTP_AUTHORIZATION=actor.basic_auth())


def active(server: RegisteredServer, token: str) -> bool:
    return introspect(server, token).json()["active"]


@pytest.fixture
def chain(oauth, calendar, drive):
    """The agent's token for the calendar (alice consented there and on the drive), a hop
    calendar → drive allowing both file scopes, and the token the calendar exchanged it for."""
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read files:write")
    hop(calendar, drive, "files:read", "files:write")
    response = exchange(calendar, on_calendar, drive.resource)
    assert response.status_code == 200, response.content
    return on_calendar, response.json()["access_token"]


# --- The exchange ------------------------------------------------------------------------------


def test_a_server_exchanges_its_token_for_one_bound_to_another_server_for_the_same_human_and_agent(
    oauth, alice, agent, calendar, drive
):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read", "files:write")

    response = exchange(calendar, on_calendar, drive.resource, scope="files:read")

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
    assert body["scope"] == "files:read"
    assert "refresh_token" not in body
    answer = introspect(drive, body["access_token"]).json()
    assert answer["active"] is True and answer["aud"] == drive.resource
    assert (answer["sub"], answer["username"], answer["client_id"]) == (
        str(alice.pk),
        "alice",
        agent.client_id,
    )
    # Current actor outermost (the calendar server), the agent inside (RFC 8693 §4.1).
    assert answer["act"] == {"sub": calendar.resource, "act": {"sub": agent.client_id}}
    # Bound to the drive only: the calendar cannot use it, and the stored row links the chain.
    assert not active(calendar, body["access_token"])
    new = access_token_by_value(body["access_token"])
    subject = access_token_by_value(on_calendar)
    assert new.parent == subject and new.delegation.server == drive.server
    assert new.delegation == Delegation.objects.get(server=drive.server, status="approved")
    assert new.expires <= subject.expires
    assert body["access_token"] not in str(AccessToken.objects.values().get(pk=new.pk))
    event = AuditEvent.objects.get(event_type="token.exchanged")
    assert (event.outcome, event.human_username, event.server_name, event.token_id) == (
        "allow",
        "alice",
        "drive",
        new.pk,
    )
    assert event.actors == [{"type": "server", "id": "calendar"}, {"type": "agent", "id": agent.client_id}]


def test_the_metadata_advertises_the_token_exchange_grant(db):
    metadata = Client().get("/.well-known/oauth-authorization-server").json()
    assert GRANT in metadata["grant_types_supported"]


def test_audience_names_the_target_as_resource_does(oauth, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    data = {"subject_token": on_calendar, "subject_token_type": ACCESS_TOKEN_TYPE, "audience": drive.resource}
    response = Client().post(
        "/oauth/token/", form({"grant_type": GRANT, **data}), FORM, HTTP_AUTHORIZATION=calendar.basic_auth()
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("delegated", "hop_scopes", "requested", "granted"),
    [
        ("files:read files:write", ["files:read"], None, "files:read"),  # the hop narrows
        ("files:read", ["files:read", "files:write"], None, "files:read"),  # the human's delegation narrows
        ("files:read files:write", ["files:read", "files:write"], "files:write", "files:write"),
        ("files:read", ["files:read", "files:write"], "files:read files:write", "files:read"),
    ],
)
def test_the_new_tokens_scopes_never_exceed_the_delegation_on_the_target_or_the_hop(
    oauth, calendar, drive, delegated, hop_scopes, requested, granted
):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, delegated)
    hop(calendar, drive, *hop_scopes)
    extra = {"scope": requested} if requested else {}

    response = exchange(calendar, on_calendar, drive.resource, **extra)

    assert response.json()["scope"] == granted
    assert introspect(drive, response.json()["access_token"]).json()["scope"] == granted


def test_asking_only_for_scopes_beyond_the_hop_is_invalid_scope(oauth, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read files:write")
    hop(calendar, drive, "files:read")

    response = exchange(calendar, on_calendar, drive.resource, scope="files:write")

    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")
    assert not AccessToken.objects.filter(parent__isnull=False).exists()


def test_without_the_humans_own_delegation_on_the_target_the_exchange_is_refused(oauth, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    hop(calendar, drive, "files:read")  # the hop allows it, but alice never consented on the drive

    response = exchange(calendar, on_calendar, drive.resource)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert "consent" in response.json()["error_description"]
    assert response["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(event_type="token.exchanged")
    assert (event.outcome, event.reason, event.human_username) == ("deny", "no_delegation", "alice")
    assert not AccessToken.objects.filter(parent__isnull=False).exists()


def test_without_a_hop_policy_from_the_actor_to_the_target_the_exchange_is_refused(oauth, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(drive, calendar, "list_events:read")  # the other way round only

    response = exchange(calendar, on_calendar, drive.resource)

    assert (response.status_code, response.json()["error"]) == (400, "unauthorized_client")
    assert AuditEvent.objects.get(event_type="token.exchanged").reason == "exchange_not_allowed"


def test_a_server_cannot_exchange_a_token_bound_to_another_server(oauth, calendar, drive, mail):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(mail, drive, "files:read")

    response = exchange(mail, on_calendar, drive.resource)  # mail presents the calendar's token

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    event = AuditEvent.objects.get(event_type="token.exchanged")
    assert (event.reason, event.detail["subject_reason"]) == ("subject_unusable", "wrong_audience")


def test_the_consoles_tool_discovery_token_cannot_be_exchanged(alice, calendar, drive):
    _, raw = mint_discovery_token(calendar.server, alice)
    hop(calendar, drive, "files:read")

    response = exchange(calendar, raw, drive.resource)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    event = AuditEvent.objects.get(event_type="token.exchanged")
    assert (event.reason, event.detail["subject_reason"]) == ("subject_unusable", "tool_discovery")


def test_an_agent_or_a_stranger_cannot_exchange(oauth, agent, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    data = {
        "grant_type": GRANT,
        "subject_token": on_calendar,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": drive.resource,
    }

    as_agent = Client().post("/oauth/token/", form({**data, "client_id": agent.client_id}), FORM)
    wrong_secret = Client().post(
        "/oauth/token/", form({**data, "client_id": calendar.client_id, "client_secret": "nope"}), FORM
    )

    for response in (as_agent, wrong_secret):
        assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert not AccessToken.objects.filter(parent__isnull=False).exists()


@pytest.mark.parametrize("ending", ["subject token", "delegation on the actor", "delegation on the target"])
def test_the_new_token_never_outlives_the_subject_token_or_the_delegations(oauth, calendar, drive, ending):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    soon = timezone.now() + timedelta(seconds=30)
    if ending == "subject token":
        AccessToken.objects.filter(pk=access_token_by_value(on_calendar).pk).update(expires=soon)
    else:
        server = calendar.server if ending == "delegation on the actor" else drive.server
        Delegation.objects.filter(server=server).update(expires=soon)

    response = exchange(calendar, on_calendar, drive.resource)

    assert response.json()["expires_in"] <= 30
    assert access_token_by_value(response.json()["access_token"]).expires == soon


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"subject_token": ""}, "invalid_request"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "invalid_request"),
        ({"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE}, "invalid_request"),
        ({"scope": ["files:read", "files:write"]}, "invalid_request"),
        ({"resource": []}, "invalid_target"),
        ({"resource": ["https://drive.example.com/mcp", "https://mail.example.com/mcp"]}, "invalid_target"),
        ({"resource": "https://unknown.example.com/mcp"}, "invalid_target"),
        ({"resource": "https://calendar.example.com/mcp"}, "unauthorized_client"),  # the actor itself
        ({"subject_token": "not-a-token"}, "invalid_grant"),
    ],
)
def test_bad_requests_get_an_rfc_error_and_change_nothing(oauth, calendar, drive, mail, change, error):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    data = {
        "grant_type": GRANT,
        "subject_token": on_calendar,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": drive.resource,
        **change,
    }
    tokens_before = AccessToken.objects.count()

    response = Client().post("/oauth/token/", form(data), FORM, HTTP_AUTHORIZATION=calendar.basic_auth())

    assert response.status_code == 400, response.content
    assert response.json()["error"] == error and response.json()["error_description"]
    assert response["Cache-Control"] == "no-store"
    assert AccessToken.objects.count() == tokens_before
    if error in ("invalid_grant", "invalid_target", "unauthorized_client"):  # well formed: audited
        event = AuditEvent.objects.get(event_type="token.exchanged")
        reason = {"invalid_grant": "subject_unusable", "unauthorized_client": "exchange_not_allowed"}
        assert (event.outcome, event.reason) == ("deny", reason.get(error, "invalid_target"))
        if error == "invalid_grant":
            assert (event.server_name, event.detail["subject_reason"]) == ("drive", "unknown_token")


def test_a_json_body_is_refused_in_the_rfc_format(calendar):
    response = Client().post(
        "/oauth/token/", {"grant_type": GRANT}, "application/json", HTTP_AUTHORIZATION=calendar.basic_auth()
    )
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "unsupported_grant_type")


# --- Chains of several hops and the depth limit ------------------------------------------------


def test_a_second_hop_nests_the_act_claim_and_the_audit_chain(
    oauth, agent, alice, calendar, drive, archive, chain
):
    _, on_drive = chain
    oauth.tokens(archive.resource, "boxes:read")
    hop(drive, archive, "boxes:read")

    response = exchange(drive, on_drive, archive.resource)

    assert response.status_code == 200, response.content
    on_archive = response.json()["access_token"]
    answer = introspect(archive, on_archive, tool="boxes", action="read").json()
    assert answer["sub"] == str(alice.pk) and answer["decision"]["allowed"] is True
    assert answer["act"] == {
        "sub": drive.resource,
        "act": {"sub": calendar.resource, "act": {"sub": agent.client_id}},
    }
    # The tool call at the archive is recorded with its whole chain, outermost actor first.
    event = AuditEvent.objects.get(event_type="tool_call.decision")
    assert (event.human_username, event.server_name, event.agent_client_id) == (
        "alice",
        "archive",
        agent.client_id,
    )
    assert event.actors == [
        {"type": "server", "id": "drive"},
        {"type": "server", "id": "calendar"},
        {"type": "agent", "id": agent.client_id},
    ]


def test_the_depth_limit_refuses_a_longer_chain(oauth, calendar, drive, archive, chain, settings):
    settings.TOKEN_EXCHANGE_MAX_DEPTH = 1
    _, on_drive = chain
    oauth.tokens(archive.resource, "boxes:read")
    hop(drive, archive, "boxes:read")

    response = exchange(drive, on_drive, archive.resource)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert (
        AuditEvent.objects.filter(event_type="token.exchanged", outcome="deny").get().reason
        == "chain_too_deep"
    )


def test_a_tool_call_at_the_target_is_audited_with_the_chain(agent, drive, chain):
    _, on_drive = chain
    answer = introspect(drive, on_drive, tool="files", action="write").json()
    assert answer["decision"] == {"tool": "files", "action": "write", "allowed": True, "reason": "ok"}
    event = AuditEvent.objects.get(event_type="tool_call.decision")
    assert (event.human_username, event.server_name, event.outcome) == ("alice", "drive", "allow")
    assert event.actors == [{"type": "server", "id": "calendar"}, {"type": "agent", "id": agent.client_id}]


# --- Revocation follows the chain --------------------------------------------------------------


def _revoke_root_delegation(**servers):
    revoke_delegation(Delegation.objects.get(server=servers["calendar"].server), by=None)


def _revoke_the_agent(agent, **_):
    revoke_agent_tokens(agent, by=None)


def _suspend_the_agent(agent, **_):
    set_agent_status(agent, "suspended", by=None)


def _revoke_the_humans_delegations(alice, **_):
    revoke_human_delegations(alice, by=None)


def _revoke_the_subject_token(subject, **_):
    revoke_token(access_token_by_value(subject), by=None)


def _deactivate_the_actor(**servers):
    server = servers["calendar"].server
    server.active = False
    server.save()


def _revoke_everything_at_the_actor(**servers):
    revoke_server_delegations(servers["calendar"].server, by=None)


def _remove_the_hop(**servers):
    ExchangePolicy.objects.filter(source=servers["calendar"].server).delete()


def _revoke_the_delegation_on_the_target(**servers):
    revoke_delegation(Delegation.objects.get(server=servers["drive"].server), by=None)


def _the_root_delegation_runs_out(**servers):
    delegation = Delegation.objects.get(server=servers["calendar"].server)
    delegation.expires = timezone.now() - timedelta(seconds=1)
    delegation.save()


def _deactivate_the_human(alice, **_):
    alice.is_active = False
    alice.save()


@pytest.mark.parametrize(
    "revoke",
    [
        _revoke_root_delegation,
        _revoke_the_agent,
        _suspend_the_agent,
        _revoke_the_humans_delegations,
        _revoke_the_subject_token,
        _deactivate_the_actor,
        _revoke_everything_at_the_actor,
        _remove_the_hop,
        _revoke_the_delegation_on_the_target,
        _deactivate_the_human,
        _the_root_delegation_runs_out,
    ],
)
def test_revoking_anything_up_the_chain_ends_the_exchanged_token_at_the_next_introspection(
    agent, alice, calendar, drive, chain, revoke
):
    subject, on_drive = chain
    assert active(drive, on_drive)

    revoke(agent=agent, alice=alice, subject=subject, calendar=calendar, drive=drive)

    assert not active(drive, on_drive)
    assert introspect(drive, on_drive, tool="files", action="read").json() == {"active": False}


@pytest.mark.parametrize(
    "revoke",
    [
        _revoke_root_delegation,
        _revoke_the_agent,
        _revoke_the_subject_token,
        _revoke_everything_at_the_actor,
        _remove_the_hop,
    ],
)
def test_revocation_deletes_the_tokens_derived_from_what_it_revokes(
    agent, alice, calendar, drive, chain, revoke
):
    subject, on_drive = chain
    revoke(agent=agent, alice=alice, subject=subject, calendar=calendar, drive=drive)
    assert access_token_by_value(on_drive) is None


def _revoke_the_subject_token_by_rfc7009(subject, **_):
    agent = access_token_by_value(subject).application
    response = Client().post("/oauth/revoke/", form({"token": subject, "client_id": agent.client_id}), FORM)
    assert response.status_code == 200


def _remove_the_hop_through_the_api(**_):
    admin_api = api_as(person("sec", Role.SECURITY_ADMIN))
    assert admin_api.delete(f"/api/exchange-policies/{ExchangePolicy.objects.get().pk}/").status_code == 204


@pytest.mark.parametrize(
    "revoke",
    [
        _revoke_root_delegation,
        _revoke_the_subject_token,
        _revoke_the_subject_token_by_rfc7009,
        _remove_the_hop,
        _remove_the_hop_through_the_api,
    ],
)
def test_the_tokens_a_revocation_ends_down_the_chain_are_recorded(
    agent, alice, calendar, drive, chain, revoke
):
    subject, on_drive = chain
    derived = access_token_by_value(on_drive)
    revoke(agent=agent, alice=alice, subject=subject, calendar=calendar, drive=drive)
    event = AuditEvent.objects.get(event_type="token.revoked", reason="chain")
    assert (event.token_id, event.server_name, event.human_username) == (derived.pk, "drive", "alice")
    assert event.actors == [{"type": "server", "id": "calendar"}, {"type": "agent", "id": agent.client_id}]


def test_narrowing_the_hop_narrows_its_tokens_at_once(calendar, drive, chain):
    _, on_drive = chain
    assert introspect(drive, on_drive).json()["scope"] == "files:read files:write"  # (now cached)
    policy = ExchangePolicy.objects.get()
    policy.scopes.remove(ToolAction.objects.get(tool__server=drive.server, name="write"))

    assert introspect(drive, on_drive).json()["scope"] == "files:read"
    refused = introspect(drive, on_drive, tool="files", action="write").json()
    assert refused["decision"]["allowed"] is False and refused["decision"]["reason"] == "scope_missing"


def test_other_integrations_keep_working_when_a_chain_is_revoked(
    oauth, browser, calendar, drive, chain, mail
):
    subject, on_drive = chain
    on_mail = oauth.tokens(mail.resource, "send:write")["access_token"]
    revoke_token(access_token_by_value(subject), by=None)
    assert not active(drive, on_drive)
    assert active(mail, on_mail)


@pytest.mark.parametrize("revoke", [_deactivate_the_actor, _remove_the_hop, _suspend_the_agent])
def test_a_delegated_token_cannot_be_re_exchanged_to_escape_its_actors_revocation(
    oauth, agent, alice, calendar, drive, archive, chain, revoke
):
    """keycloak#52691: there, a token already carrying a delegation chain could be exchanged again
    through a path that ignored its ``act``/``may_act`` claims, into a clean token that survived
    the actor's disablement and the removal of its delegation permission. Here there is one door,
    every exchanged token keeps its parent, and the whole chain is asked at every use."""
    subject, on_drive = chain
    oauth.tokens(archive.resource, "boxes:read")
    hop(drive, archive, "boxes:read")
    first = exchange(drive, on_drive, archive.resource).json()["access_token"]
    # Re-exchanging the delegated token gives no clean token: the first actor is still in it.
    assert introspect(archive, first).json()["act"]["act"]["sub"] == calendar.resource

    revoke(agent=agent, alice=alice, subject=subject, calendar=calendar, drive=drive)

    assert not active(drive, on_drive)
    assert not active(archive, first)  # exchanged before the revocation: ended with it
    again = exchange(drive, on_drive, archive.resource)  # exchanged after it: refused
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert AccessToken.objects.filter(delegation__server=archive.server, parent__isnull=False).count() <= 1


def test_refreshing_the_agents_token_leaves_tokens_exchanged_from_the_old_one_inactive(
    oauth, calendar, drive
):
    tokens = oauth.tokens(calendar.resource, "list_events:read")
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    on_drive = exchange(calendar, tokens["access_token"], drive.resource).json()["access_token"]

    refreshed = oauth.refresh(tokens["refresh_token"], calendar.resource)

    assert refreshed.status_code == 200
    # DOT deletes the access token a refresh replaces; what was exchanged from it goes with it,
    # and the audit trail says so.
    assert not active(drive, on_drive)
    ended = AuditEvent.objects.get(event_type="token.revoked", reason="chain")
    assert (ended.server_name, ended.detail["revoked"]) == ("drive", "refresh")
    again = exchange(calendar, refreshed.json()["access_token"], drive.resource)
    assert active(drive, again.json()["access_token"])


# --- Hop policies in the management API and the console ----------------------------------------


def test_a_hop_is_set_through_the_api_and_removing_it_ends_its_tokens(calendar, drive, chain):
    _, on_drive = chain
    ExchangePolicy.objects.all().delete()
    admin_api = api_as(person("sec", Role.SECURITY_ADMIN))
    body = {"source": "calendar", "target": "drive", "scopes": {"drive": ["files:read"]}}

    created = admin_api.post("/api/exchange-policies/", body, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["scopes"] == {"drive": ["files:read"]}
    assert not active(drive, on_drive)  # removing the hop above ended the token made along it
    hop_id = created.json()["id"]
    assert admin_api.delete(f"/api/exchange-policies/{hop_id}/").status_code == 204
    assert not ExchangePolicy.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "calendar", "target": "drive", "scopes": {"calendar": ["list_events:read"]}}, "scopes"),
        ({"source": "drive", "target": "drive", "scopes": {"drive": ["files:read"]}}, "target"),
        ({"source": "calendar", "target": "nowhere", "scopes": {}}, "target"),
    ],
)
def test_a_hop_with_scopes_of_another_server_or_to_itself_is_refused(calendar, drive, body, field):
    response = api_as(person("sec", Role.SECURITY_ADMIN)).post("/api/exchange-policies/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not ExchangePolicy.objects.exists()


def test_the_console_form_refuses_scopes_of_another_server(admin_client, calendar, drive):
    foreign = ToolAction.objects.get(tool__server=calendar.server, name="read")
    response = admin_client.post(
        "/admin/policies/exchangepolicy/add/",
        {"source": calendar.server.pk, "target": drive.server.pk, "scopes": [foreign.pk]},
    )
    assert response.status_code == 200 and "Not tools of the target server" in response.content.decode()
    assert not ExchangePolicy.objects.exists()


def test_a_policy_file_sets_hops_and_exports_them(calendar, drive):
    text = """
exchange_policies:
  - source: calendar
    target: drive
    scopes: ["files:read"]
"""
    first = apply(parse(text))
    assert first.changes["exchange_policies"]["created"] == ["calendar -> drive"]
    hop_scopes = ExchangePolicy.objects.get(source=calendar.server, target=drive.server).scope_set
    assert hop_scopes == {"files:read"}

    wider = apply(parse(text.replace('["files:read"]', '["files:read", "files:write"]')))

    assert wider.changes["exchange_policies"]["updated"] == ["calendar -> drive"]
    exported = export()["exchange_policies"]
    assert exported == [{"source": "calendar", "target": "drive", "scopes": ["files:read", "files:write"]}]
    assert not apply(parse(dump(export(), "yaml"))).changed  # export -> apply changes nothing


@pytest.mark.parametrize(
    ("hop_entry", "problem"),
    [
        (
            '{source: calendar, target: drive, scopes: ["send:write"]}',
            "'send:write' is not a scope of server 'drive'",
        ),
        ("{source: calendar, target: nowhere, scopes: []}", "there is no server 'nowhere'"),
        ("{source: drive, target: drive, scopes: []}", "a hop goes from one MCP server to another"),
    ],
)
def test_a_policy_file_with_a_wrong_hop_is_refused_and_changes_nothing(calendar, drive, hop_entry, problem):
    with pytest.raises(PolicyError) as refused:
        apply(parse(f"exchange_policies:\n  - {hop_entry}\n"))
    assert problem in str(refused.value) and "line 2" in str(refused.value)
    assert not ExchangePolicy.objects.exists()


# --- Revocation racing an exchange, the cache and the chain, what the actor learns -------------


@pytest.mark.django_db(transaction=True)
def test_a_revocation_racing_an_exchange_of_the_same_token_ends_both(monkeypatch, oauth, calendar, drive):
    """The exchange holds the subject token's row until its new token commits; the revocation
    locks that row before it lists the derived tokens, so it waits and then ends the new one too
    (it used to list them first, then fail at commit on the foreign key: a 500, both tokens live)."""
    import threading

    from django.db import connection, connections

    import policies.exchange as exchange_module

    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    subject = access_token_by_value(on_calendar)
    minted, outcome, real_mint = threading.Event(), {}, exchange_module._mint

    def mint_then_wait_for_the_revocation(*args, **kwargs):
        result = real_mint(*args, **kwargs)
        minted.set()
        for _ in range(400):  # until the revocation waits on a lock this transaction holds
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once per transaction
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
            threading.Event().wait(0.05)
        return result

    monkeypatch.setattr(exchange_module, "_mint", mint_then_wait_for_the_revocation)

    def revoke_while_exchanging():
        minted.wait(60)
        try:
            revoke_token(AccessToken.objects.get(pk=subject.pk), by=None)
            outcome["revoked"] = True
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            outcome["error"] = repr(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=revoke_while_exchanging)
    thread.start()
    response = exchange(calendar, on_calendar, drive.resource)
    thread.join(120)

    assert response.status_code == 200, response.content
    assert outcome.get("revoked"), outcome
    assert access_token_by_value(on_calendar) is None
    assert access_token_by_value(response.json()["access_token"]) is None
    assert AuditEvent.objects.filter(event_type="token.revoked", reason="chain").count() == 1


@pytest.mark.parametrize("shortened", ["root delegation", "parent token"])
def test_a_cached_answer_ends_when_an_ancestor_of_the_token_runs_out(
    monkeypatch, calendar, drive, chain, shortened
):
    """The derived token's ``exp`` was capped at mint; an ancestor's expiry shortened later (re-consent
    under a shorter max lifetime, an admin) must end the cached "active" answer too."""
    subject, on_drive = chain
    soon = timezone.now() + timedelta(seconds=60)
    if shortened == "root delegation":
        root = Delegation.objects.get(server=calendar.server)
        root.expires = soon
        root.save()
    else:
        parent = access_token_by_value(subject)
        parent.expires = soon
        parent.save()
    assert active(drive, on_drive)  # decided now, and cached
    later = timezone.now() + timedelta(seconds=120)
    monkeypatch.setattr(timezone, "now", lambda: later)

    assert not active(drive, on_drive)


def test_changes_to_a_hop_are_audited_as_console_changes_and_listed_in_the_sidebar(
    admin_client, calendar, drive
):
    admin_api = api_as(person("sec", Role.SECURITY_ADMIN))
    body = {"source": "calendar", "target": "drive", "scopes": {"drive": ["files:read"]}}
    created = admin_api.post("/api/exchange-policies/", body, format="json")
    assert created.status_code == 201, created.content
    assert admin_api.delete(f"/api/exchange-policies/{created.json()['id']}/").status_code == 204

    changes = AuditEvent.objects.filter(event_type="console.change", detail__model="policies.exchangepolicy")
    assert changes.count() >= 2  # created (with its scopes), deleted
    assert "Exchange policies" in admin_client.get("/admin/").content.decode()


def test_a_foreign_token_is_answered_like_an_unknown_or_unusable_one(oauth, agent, calendar, drive, mail):
    """No oracle: an MCP server learns nothing about a token bound elsewhere (nor whether the hop
    is asked first: mail has a hop to drive)."""
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(mail, drive, "files:read")
    unknown = exchange(mail, "not-a-token", drive.resource).json()
    foreign = exchange(mail, on_calendar, drive.resource).json()
    set_agent_status(agent, agent.Status.SUSPENDED, by=None)
    suspended = exchange(mail, on_calendar, drive.resource).json()

    assert unknown == foreign == suspended
    assert unknown["error"] == "invalid_grant"
    reasons = AuditEvent.objects.filter(event_type="token.exchanged").order_by("pk")
    assert [e.detail["subject_reason"] for e in reasons] == [
        "unknown_token",
        "wrong_audience",
        "wrong_audience",
    ]


def test_without_a_hop_every_subject_token_gets_the_same_answer(oauth, calendar, drive, mail):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    unknown = exchange(mail, "not-a-token", drive.resource)
    foreign = exchange(mail, on_calendar, drive.resource)
    assert unknown.json() == foreign.json()
    assert foreign.json()["error"] == "unauthorized_client"


def test_a_subject_token_with_no_usable_scope_left_is_invalid_grant_not_invalid_scope(oauth, calendar, drive):
    on_calendar = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(drive.resource, "files:read")
    hop(calendar, drive, "files:read")
    DelegationPolicy.objects.get(group__name="staff").may_delegate.clear()  # nothing left at the actor

    response = exchange(calendar, on_calendar, drive.resource)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    event = AuditEvent.objects.get(event_type="token.exchanged")
    assert (event.reason, event.detail["subject_reason"]) == ("subject_unusable", "no_usable_scope")


def test_revoking_a_derived_token_records_its_chain(agent, calendar, drive, chain):
    _, on_drive = chain
    revoke_token(access_token_by_value(on_drive), by=None)
    event = AuditEvent.objects.get(event_type="token.revoked")
    assert event.actors == [{"type": "server", "id": "calendar"}, {"type": "agent", "id": agent.client_id}]
