"""Fixtures shared by the audit export, search and browser tests: roles, an event trail, export files."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.events import record
from console.roles import Role, assign_role, ensure_roles

__all__ = [
    "FORMULA_USERNAME",
    "UTF8_USERNAME",
    "auditor",
    "auditor_client",
    "media",
    "trail",
    "user_with_role",
]

FORMULA_USERNAME = '=HYPERLINK("http://evil.example","x")'
UTF8_USERNAME = "zoë-日本"


def user_with_role(username: str, role: Role | None) -> User:
    ensure_roles()
    user = User.objects.create_user(username, password="a-long-password-123")
    if role is not None:
        assign_role(user, role)
    return user


@pytest.fixture
def media(tmp_path, settings, monkeypatch):
    """Export files in a directory of the test's own, for this process and a Celery worker it starts."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    monkeypatch.setenv("MEDIA_ROOT", str(root))
    return root


@pytest.fixture
def auditor(db) -> User:
    return user_with_role("audra", Role.COMPLIANCE_AUDITOR)


@pytest.fixture
def auditor_client(auditor) -> Client:
    client = Client()
    client.force_login(auditor)
    return client


@pytest.fixture
def trail(alice, agent, calendar, mail) -> dict:
    """Events through the one recording entry point: alice's calls, a denial, hostile and UTF-8 names."""
    mallory = User.objects.create_user(FORMULA_USERNAME)
    zoe = User.objects.create_user(UTF8_USERNAME)
    events = [
        record(
            "tool_call.decision",
            outcome="allow",
            human=alice,
            agent=agent,
            server=calendar.server,
            tool="list_events",
            action="read",
            detail={"note": 'comma, "quotes"\nand a newline'},
        ),
        record(
            "tool_call.decision",
            outcome="deny",
            reason="scope_missing",
            human=alice,
            agent=agent,
            server=calendar.server,
            tool="create_event",
            action="write",
        ),
        record(
            "tool_call.decision",
            outcome="allow",
            human=alice,
            agent=agent,
            server=mail.server,
            tool="send",
            action="write",
        ),
        record(
            "tool_call.decision",
            outcome="deny",
            reason="revoked",
            human=mallory,
            agent=agent,
            server=calendar.server,
            tool="list_events",
            action="read",
            detail={"memo": "=1+1"},
        ),
        record(
            "consent.granted",
            outcome="allow",
            human=zoe,
            agent=agent,
            server=calendar.server,
            detail={"note": "@SUM(A1)"},
        ),
    ]
    return {"events": events, "mallory": mallory, "zoe": zoe}
