"""Delegations: one live delegation per human, agent and server, even under concurrent consents."""

import threading

import pytest
from django.db import connection

from policies.models import Delegation
from policies.services import agents_of, delegate
from tests.conftest import introspect


@pytest.mark.django_db(transaction=True)
def test_concurrent_consents_leave_one_approved_delegation(alice, agent, calendar):
    barrier = threading.Barrier(4)
    errors = []

    def consent(scope: str) -> None:
        try:
            barrier.wait()
            delegate(alice, agent, calendar.server, [scope])
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=consent, args=(s,)) for s in ["list_events:read", "create_event:write"] * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    approved = Delegation.objects.filter(human=alice, agent=agent, server=calendar.server, status="approved")
    assert approved.count() == 1
    assert approved.get().scope in {"list_events:read", "create_event:write"}


def test_agents_of_lists_a_humans_delegations_with_their_last_use(oauth, calendar, mail, alice):
    token = oauth.tokens(calendar.resource, "list_events:read")["access_token"]
    oauth.tokens(mail.resource, "send:write")
    introspect(calendar, token)

    rows = {row.server.name: row for row in agents_of(alice)}

    assert set(rows) == {"calendar", "mail"}
    assert rows["calendar"].scopes == ["list_events:read"]
    assert rows["calendar"].agent == oauth.agent
    assert rows["calendar"].status == "approved"
    assert rows["calendar"].last_used is not None and rows["mail"].last_used is None
