"""Delegations that need an approver: the human waits, an approver approves or denies, the
authorization completes (or is refused) exactly as a direct consent would, and delegations expire."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from email import message_from_bytes
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail as outbox
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from console.roles import Role, assign_role
from policies.models import Delegation, DelegationPolicy
from policies.services import (
    DelegationStateError,
    approve_delegation,
    deny_delegation,
    expire_delegations,
)
from policies.tasks import expire_delegations_task
from tests.conftest import REDIRECT_URI, introspect
from tests.support import free_loopback_port

BOTH = "list_events:read create_event:write"


@pytest.fixture
def high_risk_needs_approval(alice):
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")


@pytest.fixture
def approver(db) -> User:
    user = User.objects.create_user("ann", email="ann@example.com")
    assign_role(user, Role.APPROVER)
    return user


def ask(oauth, calendar, scope=BOTH):
    """The human consents; returns (authorize params, response to the consent POST)."""
    params = oauth.authorize_params(calendar.resource, scope)
    return params, oauth.consent(params)


def query(response) -> dict:
    assert response.status_code == 302, response.content[:300]
    location = response["Location"]
    assert location.startswith(REDIRECT_URI), location
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def test_consent_page_marks_the_scopes_that_need_an_approver(oauth, calendar, high_risk_needs_approval):
    page = oauth.browser.get("/oauth/authorize/", oauth.authorize_params(calendar.resource, BOTH))
    rows = {row["scope"]: row["needs_approval"] for row in page.context["scope_rows"]}
    assert rows == {"list_events:read": False, "create_event:write": True}
    assert b"needs approval" in page.content


def test_a_scope_that_needs_approval_leaves_a_pending_delegation_and_a_waiting_page(
    oauth, calendar, high_risk_needs_approval
):
    _, response = ask(oauth, calendar)

    delegation = Delegation.objects.get()
    assert delegation.status == Delegation.Status.PENDING
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == f"/oauth/authorize/pending/{delegation.pk}/"
    page = oauth.browser.get(response["Location"])
    assert b"Waiting for an approver" in page.content
    assert b'http-equiv="refresh"' in page.content
    assert page["X-Frame-Options"] == "DENY"
    assert AuditEvent.objects.filter(event_type="consent.granted", delegation_id=delegation.pk).exists()


def test_unticking_the_scope_that_needs_approval_is_approved_at_once(
    oauth, calendar, high_risk_needs_approval
):
    tokens = oauth.tokens(calendar.resource, BOTH, grant=["list_events:read"])
    assert tokens["scope"] == "list_events:read"


def test_an_approved_delegation_keeps_working_while_a_wider_one_waits(
    oauth, calendar, high_risk_needs_approval
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    ask(oauth, calendar)

    assert Delegation.objects.filter(status="pending").count() == 1
    assert introspect(calendar, token).json()["active"] is True


def test_approval_completes_the_authorization_with_code_state_and_iss(
    oauth, calendar, approver, high_risk_needs_approval
):
    old_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    params, response = ask(oauth, calendar)
    waiting = response["Location"]
    delegation = Delegation.objects.get(status="pending")

    approve_delegation(delegation, by=approver, comment="fine")

    page = oauth.browser.get(waiting)
    assert b"Approved" in page.content
    finished = query(oauth.browser.post(waiting))
    assert finished["state"] == params["state"]
    assert finished["iss"] == settings.ISSUER
    token = oauth.exchange(finished["code"], calendar.resource).json()
    assert set(token["scope"].split()) == set(BOTH.split())
    # The new delegation took the place of the old one, whose token now lives under it.
    assert introspect(calendar, old_token).json()["active"] is True
    assert Delegation.objects.get(status="approved").pk == delegation.pk
    event = AuditEvent.objects.get(event_type="delegation.approved")
    assert (event.actor_username, event.human_username) == ("ann", "alice")
    # The request is used once: the page cannot mint a second code.
    assert oauth.browser.post(waiting).status_code == 404


def test_a_denied_request_shows_the_comment_and_sends_the_agent_access_denied(
    oauth, calendar, approver, high_risk_needs_approval
):
    params, response = ask(oauth, calendar)
    waiting = response["Location"]

    deny_delegation(Delegation.objects.get(), by=approver, comment="Not for this project")

    page = oauth.browser.get(waiting)
    assert b"Not for this project" in page.content
    # RFC 9207: the waiting page's error redirect names the issuer, as every authorization response.
    assert query(oauth.browser.post(waiting)) == {
        "error": "access_denied",
        "state": params["state"],
        "iss": "http://testserver",
    }
    assert AuditEvent.objects.get(event_type="delegation.denied").actor_username == "ann"


def test_the_waiting_page_is_the_humans_own_and_its_post_needs_csrf(
    oauth, calendar, approver, high_risk_needs_approval
):
    _, response = ask(oauth, calendar)
    waiting = response["Location"]
    approve_delegation(Delegation.objects.get(), by=approver)

    stranger = Client()
    stranger.force_login(approver)
    assert stranger.get(waiting).status_code == 404
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.cookies = oauth.browser.cookies
    assert csrf_checked.post(waiting).status_code == 403


def test_only_a_pending_delegation_can_be_decided_and_a_denial_needs_a_comment(
    oauth, calendar, approver, high_risk_needs_approval
):
    ask(oauth, calendar)
    delegation = Delegation.objects.get()
    with pytest.raises(DelegationStateError):
        deny_delegation(delegation, by=approver, comment="  ")
    approve_delegation(delegation, by=approver)
    with pytest.raises(DelegationStateError):
        approve_delegation(delegation, by=approver)
    with pytest.raises(DelegationStateError):
        deny_delegation(delegation, by=approver, comment="too late")
    delegation.refresh_from_db()
    assert delegation.status == Delegation.Status.APPROVED


def test_an_approver_cannot_approve_their_own_request(oauth, calendar, alice, high_risk_needs_approval):
    ask(oauth, calendar)
    assign_role(alice, Role.APPROVER)
    delegation = Delegation.objects.get()

    with pytest.raises(DelegationStateError, match="your own request"):
        approve_delegation(delegation, by=alice)

    delegation.refresh_from_db()
    assert delegation.status == Delegation.Status.PENDING
    assert not AuditEvent.objects.filter(event_type="delegation.approved").exists()


def test_approval_grants_only_what_the_policy_allows_now(
    oauth, calendar, approver, high_risk_needs_approval, alice
):
    ask(oauth, calendar)
    policy = alice.groups.get(name="staff").delegation_policies.get()
    policy.may_delegate.remove(*policy.may_delegate.filter(tool__name="list_events"))

    delegation = approve_delegation(Delegation.objects.get(), by=approver)

    assert delegation.scope == "create_event:write"


def test_approvers_are_emailed_by_role_unless_addresses_are_configured(
    oauth, calendar, approver, high_risk_needs_approval, django_capture_on_commit_callbacks, settings
):
    with django_capture_on_commit_callbacks(execute=True):
        ask(oauth, calendar)
    assert [m.to for m in outbox.outbox] == [["ann@example.com"]]
    assert "create_event:write" in outbox.outbox[0].body

    settings.APPROVER_EMAILS = ["security@example.com"]
    with django_capture_on_commit_callbacks(execute=True):
        ask(oauth, calendar, "create_event:write")
    assert outbox.outbox[-1].to == ["security@example.com"]


def test_delegations_past_their_lifetime_expire_with_their_tokens(oauth, calendar, mail):
    calendar_token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    mail_token = oauth.tokens(mail.resource, "send:write")["access_token"]
    Delegation.objects.filter(server=calendar.server).update(expires=timezone.now() - timedelta(seconds=1))

    assert expire_delegations() == 1

    assert introspect(calendar, calendar_token).json()["active"] is False
    assert introspect(mail, mail_token).json()["active"] is True
    assert Delegation.objects.get(server=calendar.server).status == Delegation.Status.EXPIRED
    assert AuditEvent.objects.filter(event_type="delegation.expired").count() == 1


def wait_longer_than_the_approval_timeout(delegation: Delegation, hours: float = 72) -> None:
    Delegation.objects.filter(pk=delegation.pk).update(
        created=timezone.now() - timedelta(hours=hours, minutes=1)
    )


def test_the_waiting_page_says_when_the_request_expires(oauth, calendar, high_risk_needs_approval):
    _, response = ask(oauth, calendar)

    page = oauth.browser.get(response["Location"])

    assert b"If no approver decides within 72 hours" in page.content
    deadline = Delegation.objects.get().created + timedelta(hours=72)
    assert f'datetime="{deadline.isoformat()}"'.encode() in page.content


def test_a_request_no_approver_decides_in_time_expires_and_the_human_is_told(
    oauth, calendar, high_risk_needs_approval
):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    params, response = ask(oauth, calendar)
    waiting = response["Location"]
    pending = Delegation.objects.get(status="pending")
    wait_longer_than_the_approval_timeout(pending)

    assert expire_delegations() == 1

    pending.refresh_from_db()
    assert pending.status == Delegation.Status.EXPIRED
    event = AuditEvent.objects.get(event_type="delegation.expired")
    assert (event.delegation_id, event.reason, event.human_username) == (
        pending.pk,
        "approval_timeout",
        "alice",
    )
    assert event.detail["comment"] == "No approver decided within 72 hours."
    page = oauth.browser.get(waiting)
    assert b"The request expired" in page.content
    assert b"No approver decided within 72 hours." in page.content
    assert b'http-equiv="refresh"' not in page.content
    # RFC 9207: the waiting page's error redirect names the issuer, as every authorization response.
    assert query(oauth.browser.post(waiting)) == {
        "error": "access_denied",
        "state": params["state"],
        "iss": "http://testserver",
    }
    # Only the request expired: the delegation approved before it keeps working.
    assert introspect(calendar, token).json()["active"] is True


def test_the_approval_timeout_is_a_setting_and_younger_requests_keep_waiting(
    oauth, calendar, high_risk_needs_approval, settings
):
    settings.DELEGATION_APPROVAL_TIMEOUT_HOURS = 2
    ask(oauth, calendar)
    pending = Delegation.objects.get()
    wait_longer_than_the_approval_timeout(pending, hours=1)

    assert expire_delegations() == 0
    assert Delegation.objects.get().status == Delegation.Status.PENDING

    wait_longer_than_the_approval_timeout(pending, hours=2)
    assert expire_delegations() == 1
    assert AuditEvent.objects.get(event_type="delegation.expired").detail["comment"] == (
        "No approver decided within 2 hours."
    )


def test_an_approver_cannot_decide_a_request_past_its_deadline(
    oauth, calendar, approver, high_risk_needs_approval
):
    ask(oauth, calendar)
    pending = Delegation.objects.get()
    wait_longer_than_the_approval_timeout(pending)

    with pytest.raises(DelegationStateError, match="expired"):
        approve_delegation(pending, by=approver)
    with pytest.raises(DelegationStateError, match="expired"):
        deny_delegation(pending, by=approver, comment="too late")
    assert Delegation.objects.get().status == Delegation.Status.PENDING
    assert not AuditEvent.objects.filter(event_type__in=["delegation.approved", "delegation.denied"]).exists()


def test_consenting_again_while_a_request_waits_replaces_it(
    oauth, calendar, approver, high_risk_needs_approval
):
    _, first = ask(oauth, calendar)
    older = Delegation.objects.get()
    params, second = ask(oauth, calendar, "create_event:write")

    newer = Delegation.objects.get(status="pending")
    assert newer.pk != older.pk and newer.scope == "create_event:write"
    older.refresh_from_db()
    assert older.status == Delegation.Status.REVOKED
    event = AuditEvent.objects.get(event_type="delegation.revoked", delegation_id=older.pk)
    assert (event.reason, event.actor_username) == ("superseded", "alice")
    page = oauth.browser.get(first["Location"])
    assert f"Replaced by a newer request (#{newer.pk})".encode() in page.content
    with pytest.raises(DelegationStateError):
        approve_delegation(older, by=approver)
    # The newer request is the one an approver decides, and it completes its own authorization.
    approve_delegation(newer, by=approver)
    finished = query(oauth.browser.post(second["Location"]))
    assert finished["state"] == params["state"]
    token = oauth.exchange(finished["code"], calendar.resource).json()
    assert token["scope"] == "create_event:write"


def test_a_consent_approved_at_once_also_replaces_the_waiting_request(
    oauth, calendar, high_risk_needs_approval
):
    ask(oauth, calendar)
    tokens = oauth.tokens(calendar.resource, "list_events:read")

    assert tokens["scope"] == "list_events:read"
    assert set(Delegation.objects.values_list("status", flat=True)) == {"approved", "revoked"}
    assert AuditEvent.objects.get(event_type="delegation.revoked").reason == "superseded"


def test_requests_for_other_agents_or_servers_are_not_replaced(
    oauth, calendar, mail, alice, high_risk_needs_approval
):
    ask(oauth, calendar)
    DelegationPolicy.objects.filter(group__name="mailers").update(approval_risk="high")
    oauth.consent(oauth.authorize_params(mail.resource, "send:write"))

    assert sorted(Delegation.objects.values_list("server__name", "status")) == [
        ("calendar", "pending"),
        ("mail", "pending"),
    ]


class Inbox:
    """What a real SMTP server on loopback received."""

    def __init__(self):
        self.messages = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        self.arrived.set()
        return "250 OK"


@pytest.fixture
def smtp_inbox(monkeypatch):
    """An SMTP server on loopback; the Celery worker started after this fixture sends to it."""
    inbox = Inbox()
    port = free_loopback_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("EMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_PORT", str(port))
    monkeypatch.setenv("APPROVER_EMAILS", "approvers@example.com")
    yield inbox
    controller.stop()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_emails_the_approvers_through_smtp(smtp_inbox, celery_worker, oauth, calendar, alice):
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")

    ask(oauth, calendar)

    assert smtp_inbox.arrived.wait(timeout=60), "no email reached the SMTP server"
    recipients, message = smtp_inbox.messages[0]
    assert recipients == ["approvers@example.com"]
    assert "Research agent" in message["Subject"]
    delegation = Delegation.objects.get()
    assert f"/admin/policies/delegation/{delegation.pk}/decide/" in message.get_payload()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_expires_a_request_no_approver_decided(celery_worker, oauth, calendar, alice):
    DelegationPolicy.objects.filter(group__name="staff").update(approval_risk="high")
    ask(oauth, calendar)
    pending = Delegation.objects.get()
    wait_longer_than_the_approval_timeout(pending)

    expire_delegations_task.delay()

    deadline = time.monotonic() + 60
    while Delegation.objects.get().status == Delegation.Status.PENDING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Delegation.objects.get().status == Delegation.Status.EXPIRED
    assert AuditEvent.objects.get(event_type="delegation.expired").reason == "approval_timeout"
