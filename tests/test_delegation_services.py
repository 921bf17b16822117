"""Delegations: one live delegation per human, agent and server, even under concurrent consents."""

import threading

import pytest
from django.db import connection

from policies.models import Delegation
from policies.services import delegate


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
