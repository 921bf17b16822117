"""People in console roles, logged in to the management API, and a small world of one of everything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from console.roles import Role, assign_role
from policies.models import AccessToken, Agent, Delegation, RefreshToken
from tests.conftest import REDIRECT_URI


def person(username: str, role: Role | None = None) -> User:
    user = User.objects.create_user(username, password=f"{username}-password-123")
    if role is not None:
        assign_role(user, role)
    return user


def api_as(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def make_agent(name: str, **fields) -> Agent:
    return Agent.objects.create(
        name=name,
        client_type=Agent.CLIENT_PUBLIC,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT_URI,
        registration_source=Agent.RegistrationSource.MANUAL,
        **fields,
    )


def pending_delegation(human: User, agent: Agent, server, scope: str) -> Delegation:
    return Delegation.objects.create(
        human=human, agent=agent, server=server, scope=scope, status=Delegation.Status.PENDING
    )


@dataclass
class Tokens:
    access: AccessToken
    refresh: RefreshToken


def tokens_for(delegation: Delegation, value: str) -> Tokens:
    """Tokens hanging off ``delegation`` (DOT hashes ``value`` on save)."""
    access = AccessToken.objects.create(
        user=delegation.human,
        application=delegation.agent,
        delegation=delegation,
        token=f"access-{value}",
        scope=delegation.scope,
        expires=timezone.now() + timedelta(minutes=15),
    )
    refresh = RefreshToken.objects.create(
        user=delegation.human,
        application=delegation.agent,
        delegation=delegation,
        token=f"refresh-{value}",
        access_token=access,
    )
    return Tokens(access, refresh)


def audit_count() -> int:
    return AuditEvent.objects.count()


def url_patterns(patterns=None, prefix: str = "", module: str = ""):
    """(route, URLPattern, top-level included module) of every URL the console serves."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            name = getattr(pattern.urlconf_name, "__name__", str(pattern.urlconf_name))
            yield from url_patterns(pattern.url_patterns, route, module or name)
        else:
            yield route, pattern, module


@dataclass
class ApiRoute:
    path: str  # as OpenAPI writes it: /api/servers/{name}/
    name: str | None
    view_class: type
    methods: dict[str, str | None]  # HTTP method -> viewset action (None for a plain API view)


def api_routes() -> list[ApiRoute]:
    """Every DRF route under /api/, with its methods."""
    routes = []
    for route, pattern, _ in url_patterns():
        view_class = getattr(pattern.callback, "cls", None)
        if not route.startswith("api/") or view_class is None:
            continue
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.replace("^", "").replace("$", ""))
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
        actions = getattr(pattern.callback, "actions", None)
        if actions:
            # DRF adds "head" (as GET) to this dict at the first request; HEAD is GET here.
            methods = {method: action for method, action in actions.items() if method != "head"}
        else:
            methods = {m: None for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)}
        routes.append(ApiRoute(path, pattern.name, view_class, methods))
    return routes
