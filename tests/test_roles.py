"""Every role against every console page and API endpoint: allowed or refused as the table says.

The pages and endpoints are enumerated from the admin registry and the URLconf, so a page added
later is covered at once; one that the tables below do not place makes its case fail. What each
role may do is declared here (the product's roles), not read from console.roles, which is the
code under test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, reverse
from django.utils import timezone

from audit.models import AuditCheckpoint, AuditEvent, AuditExport, LegalHold
from console.roles import Role
from identity.models import ExternalIdentity, TrustedIdentityProvider
from policies.models import Delegation, ExchangePolicy, PolicySetting
from tests.api_support import api_routes, make_agent, pending_delegation, person, tokens_for, url_patterns
from tests.conftest import allow_delegation, make_server
from tests.support import free_loopback_port

# --- The declared table -------------------------------------------------------------------------

EVERYTHING = {"view", "add", "change", "delete", "approve", "revoke"}
SIGNED_IN = {"self": {"own"}}  # any human: their own consent and "My agents"
CONSOLE = {"console": {"enter"}}  # staff: the admin's own pages (index, search, password)

MAY: dict[str, dict[str, set[str]]] = {
    "security admin": {
        **SIGNED_IN,
        **CONSOLE,
        "policies.*": EVERYTHING,
        "audit.auditevent": {"view", "export"},
        "audit.auditexport": {"view"},
        "audit.auditcheckpoint": {"view"},
        "audit.legalhold": {"view", "add", "change"},
        "auth.user": {"view", "add", "change"},
        "auth.group": {"view", "add", "change"},
        "auditlog.logentry": {"view"},
        "identity.*": EVERYTHING,  # trusted IdPs, their group mappings, linked identities
    },
    "approver": {**SIGNED_IN, **CONSOLE, "policies.delegation": {"view", "approve"}},
    "compliance auditor": {
        **SIGNED_IN,
        **CONSOLE,
        "policies.*": {"view"},
        "audit.*": {"view"},
        "audit.auditevent": {"view", "export"},
        "audit.auditexport": {"view"},
        "auth.user": {"view"},
        "auth.group": {"view"},
        "auditlog.logentry": {"view"},  # read-only everywhere, the model diffs included
        "identity.*": {"view"},
    },
    "end user": SIGNED_IN,
    "anonymous": {},
}

# Things no role does by hand: the OAuth flow, the trail and the sealer own them.
NOBODY = {
    ("policies.delegation", "add"): "delegations come from a human's consent",
    ("policies.delegation", "delete"): "delegations are revoked, never deleted",
    ("policies.accesstoken", "add"): "tokens come from the OAuth flow",
    ("policies.accesstoken", "delete"): "tokens are revoked (audited, with their pair)",
    ("policies.refreshtoken", "add"): "tokens come from the OAuth flow",
    ("policies.refreshtoken", "delete"): "tokens are revoked (audited, with their pair)",
    ("audit.auditevent", "add"): "events are recorded, not typed in",
    ("audit.auditevent", "change"): "the trail is append-only",
    ("audit.auditevent", "delete"): "the trail is append-only",
    ("audit.auditcheckpoint", "add"): "the sealer writes checkpoints",
    ("audit.auditcheckpoint", "change"): "checkpoints are signed",
    ("audit.auditcheckpoint", "delete"): "checkpoints are signed",
    ("audit.auditexport", "add"): "exports start from the export page, which asks for the export permission",
    ("audit.auditexport", "change"): "exports are jobs, not edited",
    ("audit.legalhold", "delete"): "holds are released, not deleted",
    ("auditlog.logentry", "add"): "model diffs are recorded, not typed in",
    ("auditlog.logentry", "change"): "model diffs are append-only",
    ("auditlog.logentry", "delete"): "model diffs are append-only",
    ("identity.externalidentity", "add"): "an IdP links a human when they first come through it",
    ("identity.externalidentity", "change"): "a link is the IdP's subject: unlink (delete), never edit",
}


def may(role: str, resource: str, verb: str) -> bool:
    if resource == "public":
        return True
    if (resource, verb) in NOBODY:
        return False
    table = MAY[role]
    app = resource.split(".")[0]
    return verb in table.get(resource, set()) | table.get(f"{app}.*", set())


# Extra API actions and custom admin pages: the (resource, verb) each one is.
API_ACTIONS = {
    ("policies.mcpserver", "rotate_credentials"): ("policies.mcpserver", "change"),
    ("policies.mcpserver", "import_tools"): ("policies.mcpserver", "change"),
    ("policies.mcpserver", "revoke_all"): ("policies.delegation", "revoke"),
    ("policies.agent", "approve"): ("policies.agent", "change"),
    ("policies.agent", "suspend"): ("policies.agent", "change"),
    ("policies.agent", "reactivate"): ("policies.agent", "change"),
    ("policies.agent", "revoke_tokens"): ("policies.delegation", "revoke"),
    ("policies.delegation", "approve"): ("policies.delegation", "approve"),
    ("policies.delegation", "deny"): ("policies.delegation", "approve"),
    ("policies.delegation", "revoke"): ("policies.delegation", "revoke"),
    ("policies.accesstoken", "revoke"): ("policies.accesstoken", "revoke"),
    ("policies.refreshtoken", "revoke"): ("policies.refreshtoken", "revoke"),
    ("auth.user", "revoke_all"): ("policies.delegation", "revoke"),
}
CRUD_VERBS = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "destroy": "delete",
}
ADMIN_VIEWS = {
    "auth_user_password_change": ("auth.user", "change"),
    "auth_user_revoke_all_delegations_of_person": ("policies.delegation", "revoke"),
    "policies_mcpserver_import_tools_page": ("policies.mcpserver", "change"),
    "policies_mcpserver_rotate_credentials": ("policies.mcpserver", "change"),
    "policies_mcpserver_revoke_everything": ("policies.delegation", "revoke"),
    "policies_agent_approve_agent": ("policies.agent", "change"),
    "policies_agent_suspend_agent": ("policies.agent", "change"),
    "policies_agent_reactivate_agent": ("policies.agent", "change"),
    "policies_agent_revoke_agent_tokens_page": ("policies.delegation", "revoke"),
    "policies_delegation_decide_page": ("policies.delegation", "approve"),
    "audit_auditevent_export_events": ("audit.auditevent", "export"),
    "audit_auditexport_new_export": ("audit.auditevent", "export"),
}
SKIP = "skip"  # declared, with the reason as the comment
SITE_VIEWS: dict[str, tuple[str, str] | str] = {
    "index": ("console", "enter"),
    "search": ("console", "enter"),
    "password_change": ("console", "enter"),
    "password_change_done": ("console", "enter"),
    "jsi18n": ("console", "enter"),
    "login": ("public", "view"),
    "logout": SKIP,  # POST only; signs the tester out
    "autocomplete": SKIP,  # needs a model field in its query; Django checks that model's view permission
    "view_on_site": SKIP,  # a redirect to the object's own page (SHOW_VIEW_ON_SITE is off)
}
# API views that are not viewsets, and pages outside the admin and the API, by URL name.
API_VIEWS: dict[str, dict[str, tuple[str, str]]] = {
    "audit-server-events": {"post": ("mcp server", "report")},  # MCP servers' own credentials only
    "audit-events": {"get": ("audit.auditevent", "view")},
    "audit-events-export": {"get": ("audit.auditevent", "export")},
    "audit-exports": {"post": ("audit.auditevent", "export")},
    "audit-export-job": {"get": ("audit.auditevent", "export")},
    "audit-export-download": {"get": ("audit.auditevent", "export")},
    "api-schema": {"get": ("console", "enter")},
    "api-docs": {"get": ("console", "enter")},
}
# name -> (method, (resource, verb), what the URL's argument is: a world object's label or OWN)
OWN = "the signed-in human's own delegation"
PAGES: dict[str, tuple[str, tuple[str, str], str | None]] = {
    "my-agents": ("get", ("self", "own"), None),
    "my-agents-revoke": ("post", ("self", "own"), OWN),
    "audit-export-new": ("get", ("audit.auditevent", "export"), None),
    "audit-export-progress": ("get", ("audit.auditevent", "export"), "audit.auditexport"),
    "login": ("get", ("public", "view"), None),
    "": ("get", ("public", "view"), None),  # / redirects to the console
    "two-factor-setup": ("get", ("console", "enter"), None),  # staff's second factor only
    "two-factor-verify": ("get", ("console", "enter"), None),
}
# logout: POST only, signs the tester out; sso-*: console SSO's doors, 404 unless an OIDC provider
# is configured, anonymous by nature (tests/test_sso.py drives them against a real provider).
PAGE_SKIP = {"logout", "sso-start", "sso-callback"}
PROTOCOL_URLCONF = "policies.oauth.urls"  # OAuth endpoints: no roles, covered by the OAuth tests

# --- The world: one row of every model a page or endpoint shows ---------------------------------


@dataclass
class World:
    objects: dict[str, object]  # model label (lower case) -> the object detail pages use
    own_delegation: dict[str, int] = field(default_factory=dict)  # username -> their delegation


@pytest.fixture
def world(db, tmp_path, settings) -> World:
    settings.MEDIA_ROOT = tmp_path
    # Unreachable on purpose: importing tools answers an error instead of reaching the internet.
    files = make_server(
        "files", f"http://127.0.0.1:{free_loopback_port()}/mcp", {"read_file": ("low", ["read"])}
    )
    alice = person("alice")
    allow_delegation("staff", [alice], files.server, ["read_file:read"])
    agent = make_agent("World agent")
    approved = Delegation.objects.create(
        human=alice, agent=agent, server=files.server, scope="read_file:read", status="approved"
    )
    tokens = tokens_for(approved, "world")
    waiting = pending_delegation(alice, make_agent("Waiting agent"), files.server, "read_file:read")
    export = AuditExport.objects.create(format="csv", status="done", rows_total=0, finished=timezone.now())
    export.file_path = default_storage.save("exports/world.csv", ContentFile(b"id\n"))
    export.save()
    objects = {
        "policies.mcpserver": files.server,
        "policies.tool": files.server.tools.get(),
        "policies.agent": agent,
        "policies.delegation": waiting,
        "policies.delegationpolicy": alice.groups.get().delegation_policies.get(),
        "policies.exchangepolicy": ExchangePolicy.objects.create(
            source=files.server,
            # Never called: a fixed URI (a second free port may equal the files server's).
            target=make_server("notes", "https://notes.example.com/mcp", {}).server,
        ),
        "policies.policysetting": PolicySetting.objects.create(
            key="agent_registration", value="auto_approve"
        ),
        "policies.accesstoken": tokens.access,
        "policies.refreshtoken": tokens.refresh,
        "auth.user": alice,
        "auth.group": Group.objects.get(name="staff"),
        "audit.auditevent": AuditEvent.objects.first(),
        "audit.auditexport": export,
        "audit.legalhold": LegalHold.objects.create(name="case 1"),
        "audit.auditcheckpoint": AuditCheckpoint.objects.create(
            chain_seq=1, last_event_id=1, event_count=1, chain_hash="0" * 64, signature="sig"
        ),
        "identity.trustedidentityprovider": TrustedIdentityProvider.objects.create(
            name="acme", issuer="https://idp.acme.example", jwks_url="https://idp.acme.example/jwks"
        ),
        "identity.externalidentity": ExternalIdentity.objects.create(
            issuer="https://idp.acme.example", subject="00u1", user=alice
        ),
        "auditlog.logentry": LogEntry.objects.create(
            content_type=ContentType.objects.get_for_model(Group),
            object_pk="1",
            object_repr="staff",
            action=LogEntry.Action.CREATE,
            changes={},
        ),
    }
    return World(objects)


ROLE_OF = {
    "security admin": Role.SECURITY_ADMIN,
    "approver": Role.APPROVER,
    "compliance auditor": Role.COMPLIANCE_AUDITOR,
    "end user": None,
}


def sign_in(role: str, world: World) -> tuple[Client, User | None]:
    """A browser signed in as someone with ``role``, who (like every human) has a delegation of their own."""
    client = Client()
    if role == "anonymous":
        return client, None
    user = person(role.replace(" ", "-"), ROLE_OF[role])
    files = world.objects["policies.mcpserver"]
    allow_delegation("staff", [user], files, ["read_file:read"])
    own = pending_delegation(user, make_agent(f"{role} agent"), files, "read_file:read")
    world.own_delegation[user.username] = own.pk
    client.force_login(user)
    return client, user


# --- Enumeration from the admin registry and the URLconf ----------------------------------------


@dataclass
class Case:
    id: str
    method: str
    url: Callable[[World, User | None], str]
    rule: tuple[str, str] | None  # None: no row in the tables (the case fails, naming the page)
    app_page: bool = False  # the admin answers 404 for an app one may see nothing of


def _object_url(name: str, label: str) -> Callable[[World, User | None], str]:
    def url(world: World, user: User | None) -> str:
        obj = world.objects.get(label)
        assert obj is not None, f"the world has no {label}: add one to the world fixture"
        return reverse(name, args=[obj.pk])

    return url


def _fixed(name: str, **kwargs) -> Callable[[World, User | None], str]:
    return lambda world, user: reverse(name, kwargs=kwargs or None)


def admin_cases() -> list[Case]:
    cases = []
    standard = {"changelist": "view", "add": "add", "change": "view", "delete": "delete", "history": "view"}
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        for pattern in model_admin.get_urls():
            if not pattern.name:
                continue  # the catch-all redirect to the change page
            kind = pattern.name.removeprefix(f"{model._meta.app_label}_{model._meta.model_name}_")
            name = f"admin:{pattern.name}"
            rule = (label, standard[kind]) if kind in standard else ADMIN_VIEWS.get(pattern.name)
            url = _object_url(name, label) if "<" in str(pattern.pattern) else _fixed(name)
            cases.append(Case(f"admin {pattern.name}", "get", url, rule))
    for pattern in admin.site.get_urls():
        if isinstance(pattern, URLPattern) and pattern.name and pattern.name != "app_list":
            row = SITE_VIEWS.get(pattern.name)
            if row != SKIP:
                cases.append(Case(f"admin {pattern.name}", "get", _fixed(f"admin:{pattern.name}"), row))
    for app_label in sorted({m._meta.app_label for m in admin.site._registry}):
        url = _fixed("admin:app_list", app_label=app_label)
        cases.append(Case(f"admin app {app_label}", "get", url, (f"{app_label}.*", "app"), app_page=True))
    return cases


def api_cases() -> list[Case]:
    cases = []
    for route in api_routes():
        for method, action in route.methods.items():
            case_id = f"api {method.upper()} {route.path}"
            if action is None:  # a plain API view
                rule = API_VIEWS.get(route.name, {}).get(method)
                cases.append(Case(case_id, method, _api_url(route.path, None, None), rule))
                continue
            label = route.view_class.queryset.model._meta.label_lower
            lookup = route.view_class.lookup_url_kwarg or route.view_class.lookup_field
            rule = (label, CRUD_VERBS[action]) if action in CRUD_VERBS else API_ACTIONS.get((label, action))
            cases.append(Case(case_id, method, _api_url(route.path, label, lookup), rule))
    return cases


def _api_url(path: str, label: str | None, lookup: str | None) -> Callable[[World, User | None], str]:
    def url(world: World, user: User | None) -> str:
        if "{" not in path:
            return path
        if lookup is None:  # the audit API's export job routes
            return re.sub(r"\{\w+\}", str(world.objects["audit.auditexport"].pk), path)
        obj = world.objects.get(label)
        assert obj is not None, f"the world has no {label}: add one to the world fixture"
        return path.replace("{" + lookup + "}", str(getattr(obj, lookup)))

    return url


def page_cases() -> list[Case]:
    cases = []
    for route, pattern, module in url_patterns():
        if route.startswith(("api/", "admin/")) or module == PROTOCOL_URLCONF:
            continue
        name = pattern.name or route
        if name in PAGE_SKIP:
            continue
        method, rule, argument = PAGES.get(name, ("get", None, None))
        if argument == OWN:
            url = _own_delegation_url(name)
        elif argument:
            url = _object_url(name, argument)
        else:
            url = _fixed(name) if pattern.name else (lambda world, user, route=route: "/" + route)
        cases.append(Case(f"page {name or '/'}", method, url, rule))
    return cases


def _own_delegation_url(name: str) -> Callable[[World, User | None], str]:
    def url(world: World, user: User | None) -> str:
        pk = world.own_delegation[user.username] if user else world.objects["policies.delegation"].pk
        return reverse(name, args=[pk])

    return url


CASES = admin_cases() + api_cases() + page_cases()


# --- The one test ---------------------------------------------------------------------------------


def expected(role: str, case: Case) -> bool:
    resource, verb = case.rule
    if verb == "app":  # an admin app page: shown to whoever may do anything in the app
        app = resource.split(".")[0]
        return any(
            key.split(".")[0] == app and any(may(role, key, v) for v in verbs)
            for key, verbs in MAY[role].items()
        )
    return may(role, resource, verb)


def refused(response, case: Case) -> bool:
    if response.status_code in (401, 403):
        return True
    if response.status_code == 302 and "login" in response["Location"]:
        return True
    return case.app_page and response.status_code == 404


@pytest.mark.parametrize("role", list(MAY))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_role_may_do_exactly_what_the_table_says(role, case, world):
    assert case.rule is not None, f"{case.id} has no row in the role tables of tests/test_roles.py"
    client, user = sign_in(role, world)
    url = case.url(world, user)

    response = getattr(client, case.method)(url)

    # 502: importing tools from the world's unreachable server is allowed and fails upstream.
    assert response.status_code < 500 or response.status_code == 502, (url, response.status_code)
    if expected(role, case):
        assert not refused(response, case), f"{role} was refused {case.method.upper()} {url}"
        assert response.status_code != 404, f"{url} not found for {role}"
    else:
        assert refused(response, case), f"{role} got {response.status_code} for {case.method.upper()} {url}"
