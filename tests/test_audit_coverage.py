"""Recording coverage: logins, failed logins and every console change land in the audit trail."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.test import Client

from audit.actor import acting_as
from audit.models import AuditEvent, LegalHold
from policies.models import Agent, DelegationPolicy, ToolAction
from tests.conftest import ALICE_PASSWORD


def changes(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type="console.change", **filters).order_by("id"))


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("sam", password="sam-password-123")


# --- Logins ------------------------------------------------------------------------------------


def test_a_login_is_recorded_with_the_human_and_the_request_metadata(alice):
    response = Client(HTTP_USER_AGENT="Firefox/140").post(
        "/accounts/login/", {"username": "alice", "password": ALICE_PASSWORD}
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(event_type="auth.login")
    assert (event.outcome, event.human_username, event.actor_username) == ("allow", "alice", "alice")
    assert (event.client_ip, event.user_agent) == ("127.0.0.1", "Firefox/140")


def test_a_failed_login_records_the_username_as_given_and_never_the_password(alice):
    response = Client().post("/accounts/login/", {"username": "alice", "password": "wrong-guess-4711"})

    assert response.status_code == 200  # the login page again, with an error
    event = AuditEvent.objects.get(event_type="auth.login_failed")
    assert (event.outcome, event.reason, event.human_username) == ("deny", "invalid_credentials", "alice")
    assert event.detail == {"username": "alice"}
    assert "wrong-guess-4711" not in repr(list(AuditEvent.objects.values()))
    assert not AuditEvent.objects.filter(event_type="auth.login").exists()


def test_a_failed_login_for_no_such_user_keeps_the_name_given_truncated(db):
    authenticate(None, username="mallory" + "x" * 500, password="whatever-123")

    event = AuditEvent.objects.get(event_type="auth.login_failed")
    assert event.human_id is None
    assert event.detail["username"] == ("mallory" + "x" * 500)[:150]


# --- Console changes: django-auditlog, bridged into the trail ------------------------------------


def test_an_admin_change_is_recorded_with_the_acting_admin_and_the_diff(admin_user):
    browser = Client()
    browser.force_login(admin_user)

    response = browser.post("/admin/auth/group/add/", {"name": "Night shift"})

    assert response.status_code == 302, response.content[:1000]
    group = Group.objects.get(name="Night shift")
    entry = LogEntry.objects.get_for_object(group).get()
    assert entry.actor == admin_user
    (event,) = changes(detail__model="auth.group", detail__object_pk=str(group.pk), detail__action="create")
    assert (event.actor_username, event.outcome) == ("sam", "allow")
    assert event.detail["action"] == "create"
    assert event.detail["object_pk"] == str(group.pk)
    assert event.detail["changes"]["name"] == ["None", "Night shift"]
    # Only the group's own fields: no reverse relations printed as "<Model>.None".
    assert set(event.detail["changes"]) == {"id", "name"}
    assert event.detail["log_entry_id"] == entry.pk
    assert event.client_ip == "127.0.0.1"


def test_a_console_change_believes_no_forwarded_address_and_survives_a_malformed_one(admin_user):
    browser = Client()
    browser.force_login(admin_user)

    spoofed = browser.post("/admin/auth/group/add/", {"name": "Spoofed"}, HTTP_X_FORWARDED_FOR="6.6.6.6")
    garbled = browser.post("/admin/auth/group/add/", {"name": "Garbled"}, HTTP_X_FORWARDED_FOR="not-an-ip")

    assert (spoofed.status_code, garbled.status_code) == (302, 302)
    for name in ("Spoofed", "Garbled"):
        (event,) = changes(detail__object_repr=name)
        assert event.client_ip == "127.0.0.1"
        assert "6.6.6.6" not in str(event.detail)


def test_a_task_names_its_actor_and_the_change_is_found_by_agent(admin_user, agent):
    with acting_as(admin_user.pk):
        agent.status = Agent.Status.SUSPENDED
        agent.save()

    (event,) = changes(agent_client_id=agent.client_id, detail__action="update")
    assert event.actor_username == "sam"
    assert event.detail["changes"]["status"] == ["active", "suspended"]


def test_a_change_outside_any_request_or_task_has_no_actor(agent):
    agent.name = "Renamed agent"
    agent.save()

    (event,) = changes(agent_client_id=agent.client_id, detail__action="update")
    assert event.actor_id is None
    assert event.detail["changes"]["name"] == ["Research agent", "Renamed agent"]


def test_a_delegation_change_names_its_human_agent_and_server(oauth, calendar, alice, agent):
    oauth.tokens(calendar.resource, "list_events:read")

    (event,) = changes(detail__model="policies.delegation", detail__action="create")
    assert (event.human_username, event.agent_client_id, event.server_name) == (
        "alice",
        agent.client_id,
        "calendar",
    )
    assert event.delegation_id is not None


def test_a_many_to_many_change_is_recorded(alice, calendar):
    policy = DelegationPolicy.objects.get(group__name="staff")
    action = ToolAction.objects.get(tool__name="create_event")
    before = AuditEvent.objects.latest("id").pk

    with acting_as(alice):
        policy.may_delegate.remove(action)

    (event,) = changes(detail__model="policies.delegationpolicy", pk__gt=before)
    assert event.actor_username == "alice"
    assert event.detail["changes"]["may_delegate"]["operation"] == "delete"


def test_secrets_never_reach_the_console_change_events(calendar, alice):
    old_hash = calendar.server.secret_hash
    secret = calendar.server.set_new_credentials()
    calendar.server.save()
    alice.set_password("a-new-password-987")
    alice.save()

    trail = repr(list(AuditEvent.objects.filter(event_type="console.change").values()))
    assert secret not in trail and calendar.server.secret_hash not in trail and old_hash not in trail
    assert "a-new-password-987" not in trail and alice.password not in trail
    # The server's new client id is a change worth recording; its secret is not.
    rotated = changes(server_name="calendar", detail__action="update")
    assert list(rotated[-1].detail["changes"]) == ["client_id"]


def test_a_legal_hold_is_a_console_change_too(admin_user):
    with acting_as(admin_user):
        hold = LegalHold.objects.create(name="Case 42", created_by=admin_user)

    (event,) = changes(detail__model="audit.legalhold")
    assert (event.detail["object_pk"], event.actor_username) == (str(hold.pk), "sam")
