"""
Dynamic Client Registration (RFC 7591/7592): DOT's endpoints, with the console's registration rules.

DOT validates the shape of the metadata and the redirect URIs; the console adds what a
self-registered agent must not slip past a human or an admin:

- grant types: only those the token endpoint serves (DOT would register ``password`` or
  ``client_credentials`` clients that then fail at every door);
- names and redirect URIs: no control or invisible format characters (a right-to-left override
  makes the consent page show another name or host than the agent's), bounded in number and size;
- RFC 7592 updates: a changed name or redirect URI is recorded, and where agents need an admin's
  approval the agent waits for it again, since the admin approved the old ones.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views import DynamicClientRegistrationManagementView, DynamicClientRegistrationView

from audit.events import record
from policies.introspection import introspection_changed
from policies.models import Agent, PolicySetting

MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 2000


def _hidden_characters(text: str) -> bool:
    """Control (Cc) or format (Cf: bidi overrides, zero-width joiners) characters."""
    return any(unicodedata.category(char) in ("Cc", "Cf") for char in text)


def registration_problem(metadata: Any) -> str | None:
    """Why the console refuses this client metadata, or None (DOT then checks the rest)."""
    if not isinstance(metadata, dict):
        return None  # DOT answers malformed bodies itself
    supported = oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if isinstance(grant_types, list):
        unsupported = [g for g in grant_types if isinstance(g, str) and g not in supported]
        if unsupported:
            return f"Unsupported grant_types {unsupported}; the token endpoint serves {', '.join(supported)}."
    name = metadata.get("client_name", "")
    if isinstance(name, str) and _hidden_characters(name):
        return "client_name must not contain control or invisible formatting characters."
    uris = metadata.get("redirect_uris", [])
    if isinstance(uris, list):
        if len(uris) > MAX_REDIRECT_URIS:
            return f"At most {MAX_REDIRECT_URIS} redirect_uris."
        for uri in uris:
            if isinstance(uri, str) and (len(uri) > MAX_REDIRECT_URI_LENGTH or _hidden_characters(uri)):
                return (
                    f"Each redirect_uri must be at most {MAX_REDIRECT_URI_LENGTH} characters, "
                    "with no control or invisible formatting characters."
                )
    return None


def _refused(request: HttpRequest) -> JsonResponse | None:
    """The RFC 7591 error for metadata the console refuses. Not audited, like DOT's own refusals:
    an open endpoint must not let anyone fill the trail."""
    try:
        problem = registration_problem(json.loads(request.body))
    except ValueError:
        return None  # not JSON: DOT answers it in RFC 7591 form
    except RecursionError:  # DOT would let it through as a 500
        problem = "Request body is nested too deeply."
    if problem is None:
        return None
    response = JsonResponse({"error": "invalid_client_metadata", "error_description": problem}, status=400)
    response["Cache-Control"] = "no-store"
    return response


class AgentRegistrationView(DynamicClientRegistrationView):
    """RFC 7591 registration of an agent."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        return _refused(request) or super().post(request, *args, **kwargs)


class AgentRegistrationManagementView(DynamicClientRegistrationManagementView):
    """RFC 7592: an agent reads, changes or deletes its own registration."""

    def put(self, request: HttpRequest, client_id: str, *args, **kwargs) -> HttpResponse:
        # Authenticated first, as DOT does: a refusal must not tell strangers a client_id exists.
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        refusal = _refused(request)
        if refusal is not None:
            return refusal
        before = {"name": auth.application.name, "redirect_uris": auth.application.redirect_uris}
        with transaction.atomic():  # never the new redirect URIs without the re-approval
            response = super().put(request, client_id, *args, **kwargs)
            if response.status_code != 200:
                return response
            agent = Agent.objects.get(pk=auth.application.pk)
            changed = sorted(key for key, value in before.items() if getattr(agent, key) != value)
            if changed:
                agent_changed(request, agent, before, changed)
        return response


def agent_changed(
    request: HttpRequest | None, agent: Agent, before: dict[str, str], changed: list[str]
) -> str:
    """An agent changed its own name or redirect URIs (RFC 7592, or a re-fetched CIMD document):
    recorded; re-approved where approval is required. Returns the agent's status now."""
    status = agent.status
    if status == Agent.Status.ACTIVE and PolicySetting.initial_agent_status() == Agent.Status.PENDING:
        status = Agent.Status.PENDING
        Agent.objects.filter(pk=agent.pk).update(status=status)
        introspection_changed()  # a bulk update sends no signal: cached answers for it are void
        agent.status = status
    record(
        "agent.changed",
        outcome="allow",
        agent=agent,
        request=request,
        detail={
            "changed": changed,
            "before": {key: before[key] for key in changed},
            "after": {key: getattr(agent, key) for key in changed},
            "status": status,
        },
    )
    return status
