"""Links into the console's audit pages, for other apps (one click from a human or an agent)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse

# The audit event changelist's filters take the export filter names as query parameters.
LINK_FILTERS = ("human", "agent", "server", "tool", "outcome", "event_type")


def events_url(**filters: str) -> str:
    """The console's audit event list filtered by e.g. ``human="alice"`` or ``agent=client_id``."""
    unknown = set(filters) - set(LINK_FILTERS)
    if unknown:
        raise TypeError(f"events_url() got unknown filter(s) {sorted(unknown)}; known: {LINK_FILTERS}")
    base = reverse("admin:audit_auditevent_changelist")
    query = urlencode({key: value for key, value in filters.items() if value not in (None, "")})
    return f"{base}?{query}" if query else base
