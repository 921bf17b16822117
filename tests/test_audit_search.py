"""Search in the console and the API: filter events by human, agent, server, tool, outcome, type and
time; one click from a human or agent to their events; from an event to its delegation and tokens;
legal holds created and released; checkpoints and exports read-only."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from audit.events import record
from audit.links import events_url
from audit.models import AuditEvent, AuditExport, LegalHold
from console.roles import Role
from policies.models import AccessToken, Delegation
from tests.test_audit_export_fixtures import *  # noqa: F403  (fixtures)
from tests.test_audit_export_fixtures import UTF8_USERNAME, user_with_role


def listed_ids(response) -> set[int]:
    """The event ids in a changelist page (each row links to its change page)."""
    assert response.status_code == 200
    return {int(pk) for pk in re.findall(r"/admin/audit/auditevent/(\d+)/change/", response.content.decode())}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"human": "alice"}, [0, 1, 2]),
        ({"server": "mail"}, [2]),
        ({"tool": "list_events"}, [0, 3]),
        ({"outcome": "deny"}, [1, 3]),
        ({"event_type": "consent.granted"}, [4]),
        ({"human": "alice", "outcome": "deny"}, [1]),
        ({"human": UTF8_USERNAME}, [4]),
    ],
)
def test_the_event_list_filters_by_what_events_url_names(filters, expected, trail, auditor_client):
    shown = listed_ids(auditor_client.get(events_url(**filters)))

    ours = {event.pk for event in trail["events"]}
    assert shown & ours == {trail["events"][i].pk for i in expected}


def test_one_click_from_an_agent_lists_its_events_only(trail, auditor_client, agent):
    other = record("tool_call.decision", outcome="allow", detail={})

    shown = listed_ids(auditor_client.get(events_url(agent=agent.client_id)))

    assert {event.pk for event in trail["events"]} <= shown
    assert other.pk not in shown
    assert set(AuditEvent.objects.filter(pk__in=shown).values_list("agent_client_id", flat=True)) == {
        agent.client_id
    }


def test_the_search_box_matches_a_username_or_client_id_exactly(trail, auditor_client, agent):
    alices = {event.pk for event in trail["events"] if event.human_username == "alice"}

    by_username = listed_ids(auditor_client.get("/admin/audit/auditevent/", {"q": "alice"}))
    by_client_id = listed_ids(auditor_client.get("/admin/audit/auditevent/", {"q": agent.client_id}))
    by_prefix = listed_ids(auditor_client.get("/admin/audit/auditevent/", {"q": "ali"}))

    assert alices and alices <= by_username
    assert set(AuditEvent.objects.filter(pk__in=by_username).values_list("human_username", flat=True)) == {
        "alice"
    }
    assert {event.pk for event in trail["events"] if event.agent_client_id == agent.client_id} <= by_client_id
    assert by_prefix == set()


def test_events_url_refuses_a_filter_it_does_not_know():
    with pytest.raises(TypeError, match="colour"):
        events_url(colour="red")


def test_the_event_list_filters_by_a_time_range(trail, auditor_client):
    old = trail["events"][0]
    day = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d")

    before = listed_ids(
        auditor_client.get(
            "/admin/audit/auditevent/", {"occurred_to_0": "2020-01-01", "occurred_to_1": "00:00"}
        )
    )
    until_tomorrow = listed_ids(
        auditor_client.get("/admin/audit/auditevent/", {"occurred_to_0": day, "occurred_to_1": "00:00"})
    )

    assert old.pk not in before
    assert old.pk in until_tomorrow


def test_an_event_links_to_its_delegation_and_tokens(oauth, calendar, alice, auditor_client):
    oauth.tokens(calendar.resource, scope="list_events:read")
    delegation = Delegation.objects.get(human=alice)
    token = AccessToken.objects.get(delegation=delegation)
    event = record(
        "tool_call.decision",
        outcome="allow",
        human=alice,
        delegation=delegation,
        token=token,
        tool="list_events",
    )

    page = auditor_client.get(f"/admin/audit/auditevent/{event.pk}/change/").content.decode()

    assert f'href="/admin/policies/delegation/{delegation.pk}/change/"' in page
    assert f'href="/admin/policies/accesstoken/{token.pk}/change/"' in page
    assert f'href="/admin/policies/accesstoken/?delegation__id__exact={delegation.pk}"' in page
    tokens = auditor_client.get(f"/admin/policies/accesstoken/?delegation__id__exact={delegation.pk}")
    assert tokens.status_code == 200


def test_events_are_read_only_in_the_console(trail, auditor_client):
    event = trail["events"][0]
    response = auditor_client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"outcome": "deny"})
    delete = auditor_client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert delete.status_code == 403
    event.refresh_from_db()
    assert event.outcome == "allow"


def test_the_search_api_lists_matching_events_newest_first_a_page_at_a_time(trail, auditor_client):
    response = auditor_client.get("/api/audit/events/", {"human": "alice"})

    assert response.status_code == 200
    body = response.json()
    ours = {event.pk for event in trail["events"]}
    rows = [row for row in body["results"] if row["id"] in ours]
    assert [row["id"] for row in rows] == [trail["events"][i].pk for i in (2, 1, 0)]
    assert rows[1]["reason"] == "scope_missing"
    assert {row["human_username"] for row in body["results"]} == {"alice"}
    assert body["next"] is None
    assert auditor_client.post("/api/audit/events/", {}).status_code in (403, 405)


def test_the_search_api_answers_a_bad_filter_with_400(trail, auditor_client):
    response = auditor_client.get("/api/audit/events/", {"since": "last week"})

    assert response.status_code == 400
    assert "since" in response.json()["filters"][0]


def test_a_security_admin_creates_and_releases_a_legal_hold_and_both_are_recorded(db):
    admin = Client()
    sam = user_with_role("sam", Role.SECURITY_ADMIN)
    admin.force_login(sam)

    created = admin.post(
        "/admin/audit/legalhold/add/",
        {
            "name": "Case 42",
            "reason": "litigation",
            "agent_client_id": "abc",
            "human_id": "",
            "server_name": "",
        },
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    hold = LegalHold.objects.get()
    assert (hold.created_by, hold.released) == (sam, None)

    released = admin.post(
        "/admin/audit/legalhold/", {"action": "release", "_selected_action": [hold.pk], "index": 0}
    )
    assert released.status_code == 302
    hold.refresh_from_db()
    assert hold.released is not None
    types = list(AuditEvent.objects.filter(actor_id=sam.pk).values_list("event_type", flat=True))
    assert {"legal_hold.created", "legal_hold.released"} <= set(types)
    assert admin.post(f"/admin/audit/legalhold/{hold.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LegalHold.objects.exists()


def test_an_auditor_sees_holds_but_cannot_create_or_release_them(auditor_client):
    hold = LegalHold.objects.create(name="Case 7")

    assert auditor_client.get("/admin/audit/legalhold/").status_code == 200
    assert auditor_client.post("/admin/audit/legalhold/add/", {"name": "mine"}).status_code == 403
    auditor_client.post(
        "/admin/audit/legalhold/", {"action": "release", "_selected_action": [hold.pk], "index": 0}
    )
    hold.refresh_from_db()
    assert hold.released is None


def test_checkpoints_and_exports_are_read_only_in_the_console(auditor_client):
    job = AuditExport.objects.create(format="csv")

    assert auditor_client.get("/admin/audit/auditcheckpoint/").status_code == 200
    assert auditor_client.get("/admin/audit/auditexport/").status_code == 200
    assert auditor_client.get("/admin/audit/auditcheckpoint/add/").status_code == 403
    assert auditor_client.get("/admin/audit/auditexport/add/").status_code == 403
    assert (
        auditor_client.post(f"/admin/audit/auditexport/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    )


def test_the_export_list_offers_a_new_export_to_auditors(auditor_client):
    response = auditor_client.get("/admin/audit/auditexport/new/")

    assert response.status_code == 302
    assert response["Location"] == "/audit/exports/new/"
