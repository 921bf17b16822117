"""Consent skipped for a new or changed client (RFC 9700 §4.1.4; MCP best practices, "Confused
Deputy": consent per client). The console never lets an earlier consent stand for a new request:
``approval_prompt=auto`` is ignored, a newly registered agent and one that changed its name or
redirect URIs (RFC 7592) face the human's consent page again, showing the new values. A change is
recorded, and where agents need an admin's approval the changed agent needs it again. A Client ID
Metadata Document that changes is handled the same way when the console re-fetches it."""

import json
from datetime import timedelta
from urllib.parse import urlsplit

from django.test import Client
from django.utils import timezone

from policies.models import Agent, PolicySetting
from tests.conftest import OAuthDriver
from tests.test_registration import (  # noqa: F401  (metadata_host is a fixture)
    DOCUMENT_REDIRECT,
    SDK_REDIRECT,
    authorize_as,
    metadata_host,
    refused_page,
    register,
    sdk_registration,
)
from tests.threats.support import events, snapshot

NEW_REDIRECT = "http://127.0.0.1:45999/new-callback"


def update_registration(registration: dict, **changes):
    body = sdk_registration(**changes)
    return Client().put(
        f"/oauth/register/{registration['client_id']}/",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registration['registration_access_token']}",
    )


def test_approval_prompt_auto_still_shows_the_consent_page(oauth, calendar):
    oauth.tokens(calendar.resource, "list_events:read")  # consented once already
    params = oauth.authorize_params(calendar.resource, "list_events:read", approval_prompt="auto")

    page = oauth.browser.get("/oauth/authorize/", params)

    assert page.status_code == 200  # the page, not a 302 with a code
    assert "form" in page.context


def test_consent_to_one_agent_never_covers_another(oauth, browser, calendar):
    oauth.tokens(calendar.resource, "list_events:read")
    other = Agent.objects.get(
        client_id=register(sdk_registration(client_name="Look-alike")).json()["client_id"]
    )
    params = OAuthDriver(browser, other).authorize_params(
        calendar.resource, "list_events:read", redirect_uri=SDK_REDIRECT, approval_prompt="auto"
    )

    page = browser.get("/oauth/authorize/", params)

    assert page.status_code == 200
    assert page.context["application"] == other
    assert b"Look-alike" in page.content


def test_a_client_that_changed_its_redirect_uri_and_name_faces_consent_showing_them(browser, calendar):
    registration = register(sdk_registration()).json()
    agent = Agent.objects.get(client_id=registration["client_id"])

    response = update_registration(registration, redirect_uris=[NEW_REDIRECT], client_name="Renamed agent")

    assert response.status_code == 200
    params = OAuthDriver(browser, agent).authorize_params(
        calendar.resource, "list_events:read", redirect_uri=NEW_REDIRECT, approval_prompt="auto"
    )
    page = browser.get("/oauth/authorize/", params)
    assert page.status_code == 200
    assert page.context["redirect_host"] == "127.0.0.1:45999"
    assert b"Renamed agent" in page.content
    (event,) = events("agent.changed")
    assert event.detail["changed"] == ["name", "redirect_uris"]
    assert event.detail["before"] == {"name": "mcp-sdk-client", "redirect_uris": SDK_REDIRECT}


def test_a_changed_client_waits_for_an_admin_again_where_agents_need_approval(browser, calendar):
    registration = register(sdk_registration()).json()
    agent = Agent.objects.get(client_id=registration["client_id"])
    PolicySetting.objects.create(key=PolicySetting.AGENT_REGISTRATION, value="require_approval")
    agent.status = Agent.Status.ACTIVE  # an admin approved it as it was
    agent.save()

    assert update_registration(registration, redirect_uris=[NEW_REDIRECT]).status_code == 200

    agent.refresh_from_db()
    assert agent.status == Agent.Status.PENDING
    params = OAuthDriver(browser, agent).authorize_params(
        calendar.resource, "list_events:read", redirect_uri=NEW_REDIRECT
    )
    page = browser.get("/oauth/authorize/", params)
    assert page.status_code == 400
    assert b"waiting for an administrator" in page.content
    assert events("agent.changed")[0].detail["status"] == "pending"


def test_a_change_to_hostile_metadata_is_refused_and_changes_nothing(db):
    registration = register(sdk_registration()).json()
    before = snapshot()

    response = update_registration(registration, redirect_uris=["javascript:alert(1)"])

    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_redirect_uri", "invalid_client_metadata"}
    assert snapshot() == before
    assert not events("agent.changed")


def test_an_unchanged_update_is_not_recorded_as_a_change(db):
    registration = register(sdk_registration()).json()
    assert update_registration(registration).status_code == 200
    assert not events("agent.changed")


def republish(host, client_id: str, **changes) -> None:
    """The agent's host now serves a changed document; the console's copy is stale."""
    path = urlsplit(client_id).path
    document = json.loads(host.documents[path]) | changes
    host.documents[path] = json.dumps(document).encode()
    Agent.objects.filter(client_id=client_id).update(cimd_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_cimd_agent_whose_document_changed_faces_consent_showing_the_change(
    settings,
    metadata_host,  # noqa: F811  (the fixture imported above)
    oauth,
    calendar,
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    client_id = metadata_host.publish()
    assert authorize_as(oauth, client_id, calendar.resource).status_code == 200
    republish(metadata_host, client_id, client_name="Renamed notes agent")

    page = authorize_as(oauth, client_id, calendar.resource)

    assert page.status_code == 200
    assert b"Renamed notes agent" in page.content
    (event,) = events("agent.changed")
    assert (event.agent_client_id, event.detail["changed"]) == (client_id, ["name"])


def test_a_changed_cimd_agent_waits_for_an_admin_again_where_agents_need_approval(
    settings,
    metadata_host,  # noqa: F811  (the fixture imported above)
    oauth,
    calendar,
):
    settings.CIMD_ALLOW_PRIVATE_ADDRESSES = True
    client_id = metadata_host.publish()
    authorize_as(oauth, client_id, calendar.resource)
    PolicySetting.objects.create(key=PolicySetting.AGENT_REGISTRATION, value="require_approval")
    republish(metadata_host, client_id, redirect_uris=[DOCUMENT_REDIRECT, "http://127.0.0.1:9/new"])

    page = authorize_as(oauth, client_id, calendar.resource)

    assert refused_page(page)
    assert Agent.objects.get(client_id=client_id).status == Agent.Status.PENDING
    assert events("agent.changed")[0].detail["status"] == "pending"
