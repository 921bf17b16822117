"""Authorization code replay (RFC 6749 §4.1.2, RFC 9700 §4.5): a code is good once. A second
exchange is refused and revokes every token the first one minted (the code leaked); two
concurrent exchanges mint one token, not two."""

import threading

import pytest
from django.db import connection

from policies.models import AccessToken
from tests.conftest import introspect
from tests.threats.support import events


def test_a_replayed_code_is_refused_and_revokes_the_tokens_it_minted(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    first = oauth.exchange(code, calendar.resource)
    assert first.status_code == 200
    tokens = first.json()

    replay = oauth.exchange(code, calendar.resource)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.json()
    # A replayed code means it leaked: what it minted is no longer trusted.
    assert introspect(calendar, tokens["access_token"]).json() == {"active": False}
    assert oauth.refresh(tokens["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"
    (event,) = events("authorization_code.replayed")
    assert (event.outcome, event.reason, event.human_username, event.server_name) == (
        "deny",
        "code_reused",
        "alice",
        "calendar",
    )


def test_a_code_replayed_after_its_tokens_were_refreshed_revokes_the_rotated_ones_too(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    tokens = oauth.exchange(code, calendar.resource).json()
    rotated = oauth.refresh(tokens["refresh_token"], calendar.resource).json()

    assert oauth.exchange(code, calendar.resource).status_code == 400

    assert introspect(calendar, rotated["access_token"]).json() == {"active": False}
    assert oauth.refresh(rotated["refresh_token"], calendar.resource).json()["error"] == "invalid_grant"


@pytest.mark.django_db(transaction=True)
def test_concurrent_exchanges_of_one_code_mint_one_token(oauth, calendar):
    code = oauth.get_code(calendar.resource, "list_events:read")
    barrier = threading.Barrier(4)
    statuses = []

    def exchange() -> None:
        barrier.wait()
        statuses.append(oauth.exchange(code, calendar.resource).status_code)
        connection.close()

    threads = [threading.Thread(target=exchange) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 400, 400, 400]
    assert AccessToken.objects.filter(delegation__isnull=False).count() == 1
