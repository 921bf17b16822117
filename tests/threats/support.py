"""What every threat module asserts after an attack: nothing was granted and nothing changed."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from audit.models import AuditEvent
from policies.models import AccessToken, Agent, Delegation, Grant, RefreshToken
from tests.conftest import REDIRECT_URI


@dataclass(frozen=True)
class Snapshot:
    """The state an attack could change: agents, delegations, codes and tokens, field by field."""

    agents: tuple
    delegations: tuple
    grants: tuple
    access_tokens: tuple
    refresh_tokens: tuple


def snapshot() -> Snapshot:
    return Snapshot(
        agents=tuple(Agent.objects.order_by("pk").values_list("pk", "status", "name", "redirect_uris")),
        delegations=tuple(Delegation.objects.order_by("pk").values_list("pk", "status", "scope", "server")),
        grants=tuple(Grant.objects.order_by("pk").values_list("pk", "scope")),
        access_tokens=tuple(AccessToken.objects.order_by("pk").values_list("pk", "scope", "expires")),
        refresh_tokens=tuple(RefreshToken.objects.order_by("pk").values_list("pk", "revoked")),
    )


def nothing_granted() -> bool:
    """No code, delegation or token exists (for attacks on a fresh world)."""
    return not (
        Grant.objects.exists()
        or Delegation.objects.exists()
        or AccessToken.objects.filter(delegation__isnull=False).exists()
        or RefreshToken.objects.exists()
    )


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("pk"))


def redirect_query(response) -> dict[str, str]:
    """The parameters of an authorization response sent back to the agent's redirect URI."""
    assert response.status_code == 302, response.content[:300]
    assert response["Location"].startswith(REDIRECT_URI), response["Location"]
    return {key: values[0] for key, values in parse_qs(urlsplit(response["Location"]).query).items()}


def error_page_without_redirect(response, *, reflected: str | None = None) -> bool:
    """The authorization endpoint's own error page: no redirect, and the hostile value not echoed."""
    return (
        response.status_code == 400
        and "Location" not in response
        and (reflected is None or reflected.encode() not in response.content)
    )
