"""The console's front page: what needs a decision now, and what happened over the last two weeks."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from audit import stats
from policies.models import Agent, Delegation

CHART_DAYS = 14


def dashboard_callback(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    """unfold's DASHBOARD_CALLBACK: adds only the sections the signed-in user may see."""
    user = request.user
    if user.has_perm("policies.view_delegation"):
        pending = Delegation.objects.filter(status=Delegation.Status.PENDING)
        context["pending_delegations"] = pending.select_related("human", "agent", "server")[:10]
        context["pending_delegations_count"] = pending.count()
        context["can_approve"] = user.has_perm("policies.approve_delegation")
        context["delegations_url"] = (
            reverse("admin:policies_delegation_changelist") + "?status__exact=pending"
        )
    if user.has_perm("policies.view_agent"):
        context["pending_agents_count"] = Agent.objects.filter(status=Agent.Status.PENDING).count()
        context["active_agents_count"] = Agent.objects.filter(status=Agent.Status.ACTIVE).count()
        agents_url = reverse("admin:policies_agent_changelist")
        context["pending_agents_url"] = agents_url + "?status__exact=pending"
        context["active_agents_url"] = agents_url + "?status__exact=active"
    if user.has_perm("audit.view_auditevent"):
        issued = stats.daily_counts(stats.TOKEN_EVENTS, days=CHART_DAYS)
        denied = stats.daily_counts(stats.CALL_EVENTS, outcome="deny", days=CHART_DAYS)
        context["activity_chart"] = json.dumps(
            {
                "labels": [day.strftime("%b %d") for day, _ in issued],
                "datasets": [
                    {
                        "label": "Tokens issued",
                        "data": [count for _, count in issued],
                        "backgroundColor": "var(--color-primary-600)",
                    },
                    {
                        "label": "Calls denied",
                        "data": [count for _, count in denied],
                        "backgroundColor": "#dc2626",
                    },
                ],
            }
        )
        context["tokens_issued_total"] = sum(count for _, count in issued)
        context["calls_denied_total"] = sum(count for _, count in denied)
        context["recent_denials"] = stats.recent_denials()
    return context
