"""Pages for humans: "My agents", the agents acting for the signed-in human, and revoking one."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from policies.models import Delegation
from policies.services import agents_of, revoke_delegation


@login_required
def my_agents(request: HttpRequest) -> HttpResponse:
    return render(request, "policies/my_agents.html", {"rows": agents_of(request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def revoke_my_agent(request: HttpRequest, delegation_id: int) -> HttpResponse:
    """Ask, then revoke one of the human's own delegations; anyone else's is a 404."""
    delegation = get_object_or_404(
        Delegation.objects.select_related("agent", "server"),
        pk=delegation_id,
        human=request.user,
        status__in=[Delegation.Status.APPROVED, Delegation.Status.PENDING],
    )
    if request.method == "POST":
        revoke_delegation(delegation, by=request.user)
        messages.success(
            request, f"{delegation.agent.name} can no longer act for you on {delegation.server.name}."
        )
        return redirect("my-agents")
    return render(request, "policies/my_agents_revoke.html", {"delegation": delegation})
