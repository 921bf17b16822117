"""
The console's screens for MCP servers and tools, agents, delegations, policies and tokens.

Every state change goes through ``policies.services`` (and ``policies.tool_import``), so the
admin, the API and the commands record the same audit events. Pages follow Django model
permissions, which the console roles (console/roles.py) hand out.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import redirect
from django.urls import reverse
from unfold.admin import ModelAdmin, TabularInline
from unfold.decorators import action, display
from unfold.widgets import UnfoldAdminPasswordWidget, UnfoldAdminTextareaWidget

from console.admin import (
    RevokeActions,
    action_selection,
    admin_page,
    confirm_page,
    confirm_then_revoke,
    events_link,
    object_or_404,
)
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    ExchangePolicy,
    Grant,
    IDToken,
    McpServer,
    PolicySetting,
    RefreshToken,
    Tool,
    ToolAction,
)
from policies.services import (
    AgentStatusError,
    DelegationStateError,
    approve_delegation,
    deny_delegation,
    register_server,
    revoke_agent_tokens,
    revoke_delegations,
    revoke_server_delegations,
    revoke_token,
    rotate_server_credentials,
    set_agent_status,
)
from policies.tool_import import IMPORT_PERMISSIONS, ToolImportError, import_tools

# DOT registers its stock admins for the swapped models; the console's replace them, and
# authorization codes and ID tokens are not console screens.
for model in (Agent, AccessToken, RefreshToken, Grant, IDToken):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


# --- MCP servers and tools ------------------------------------------------------------------------


class McpServerForm(forms.ModelForm):
    """The resource and default-scope rules are the model's (McpServer.clean), shared by every door."""

    resource = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text=McpServer._meta.get_field("resource").help_text,
    )

    class Meta:
        model = McpServer
        fields = ["name", "resource", "description", "default_scopes", "active"]


class ToolInline(TabularInline):
    model = Tool
    extra = 0
    fields = ["name", "description", "risk", "available", "last_seen"]
    readonly_fields = ["available", "last_seen"]
    show_change_link = True


class ImportToolsForm(forms.Form):
    token = forms.CharField(
        required=False,
        strip=True,
        label="Bearer token (optional)",
        help_text=(
            "Only for a server protected by another authorization server: used for this import only, "
            "never stored or logged. Empty: the console lists the tools with a 60-second token of its own."
        ),
        widget=UnfoldAdminPasswordWidget(render_value=False),
    )


@admin.register(McpServer)
class McpServerAdmin(RevokeActions, ModelAdmin):
    form = McpServerForm
    list_display = ["name", "resource", "active", "tool_count", "tools_imported", "client_id"]
    list_filter = ["active"]
    search_fields = ["name", "resource"]
    readonly_fields = ["client_id", "tools_imported", "created"]
    inlines = [ToolInline]
    actions = ["revoke_everything_selected"]
    actions_detail = ["import_tools_page", "rotate_credentials", "revoke_everything"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(tool_total=Count("tools"))

    @display(description="tools", ordering="tool_total")
    def tool_count(self, obj: McpServer) -> int:
        return obj.tool_total

    def get_fields(self, request, obj=None):
        fields = ["name", "resource", "description", "default_scopes", "active"]
        return fields if obj is None else fields + ["client_id", "tools_imported", "created"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        server, secret = register_server(by=request.user, **form.cleaned_data)
        obj.__dict__.update(server.__dict__)  # the admin goes on (inlines, log) with the saved row
        request.new_server_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        return self._credentials_page(request, obj, request.new_server_secret, "registered")

    def _credentials_page(self, request, server: McpServer, secret: str, verb: str):
        return admin_page(
            self,
            request,
            "admin/policies/mcpserver/credentials.html",
            f"{server.name}: introspection credentials",
            server=server,
            secret=secret,
            verb=verb,
            server_url=change_url(server),
        )

    @action(
        description="Import tools", url_path="import-tools", permissions=["import_tools"], icon="download"
    )
    def import_tools_page(self, request, object_id):
        server = object_or_404(self, request, object_id)
        form = ImportToolsForm(request.POST or None)
        context = {"server": server, "form": form, "server_url": change_url(server)}
        if request.method == "POST" and form.is_valid():
            try:
                context["result"] = import_tools(
                    server, by=request.user, token=form.cleaned_data["token"] or None
                )
                server.refresh_from_db()
            except ToolImportError as error:
                context["error"] = str(error)
            context["form"] = ImportToolsForm()  # the token is never sent back to the page
        return admin_page(
            self,
            request,
            "admin/policies/mcpserver/import_tools.html",
            f"Import tools of {server}",
            **context,
        )

    @action(
        description="Rotate credentials", url_path="rotate-credentials", permissions=["change"], icon="key"
    )
    def rotate_credentials(self, request, object_id):
        server = object_or_404(self, request, object_id)
        if request.method != "POST" or request.POST.get("confirm") != "yes":
            return confirm_page(
                self,
                request,
                title=f"Rotate the credentials of {server}",
                question=f"Give {server} a new client id and secret?",
                effects=[
                    "The current credentials stop working at once: update the MCP server's configuration."
                ],
                button="Rotate credentials",
                cancel_url=change_url(server),
            )
        secret = rotate_server_credentials(server, by=request.user)
        server.refresh_from_db()
        return self._credentials_page(request, server, secret, "rotated")

    @action(
        description="Revoke everything", url_path="revoke-everything", permissions=["revoke"], icon="block"
    )
    def revoke_everything(self, request, object_id):
        server = object_or_404(self, request, object_id)
        return self._revoke_servers(request, [server], hidden=None, cancel=change_url(server))

    @admin.action(description="Revoke everything bound to the selected servers", permissions=["revoke"])
    def revoke_everything_selected(self, request, queryset):
        return self._revoke_servers(
            request,
            list(queryset),
            hidden=action_selection("revoke_everything_selected", queryset),
            cancel=request.get_full_path(),
        )

    def _revoke_servers(self, request, servers: list[McpServer], *, hidden, cancel: str):
        return confirm_then_revoke(
            self,
            request,
            servers,
            revoke_server_delegations,
            title="Revoke everything bound to " + ", ".join(s.name for s in servers),
            question="Revoke every delegation and token bound to these MCP servers?",
            effects=[
                f"{s.name}: {s.delegations.filter(status__in=Delegation.LIVE).count()} live or pending "
                "delegation(s) and all their tokens end now."
                for s in servers
            ]
            + ["Other servers' delegations keep working. The servers stay registered."],
            button="Revoke everything",
            hidden=hidden,
            cancel=cancel,
        )

    def has_import_tools_permission(self, request, obj=None) -> bool:
        # A method, not the dotted names: see has_approve_permission.
        return request.user.has_perms(IMPORT_PERMISSIONS)


class ToolActionInline(TabularInline):
    model = ToolAction
    extra = 0


@admin.register(Tool)
class ToolAdmin(ModelAdmin):
    list_display = ["name", "server", "risk", "available", "last_seen", "scopes"]
    list_filter = ["server", "risk", "available"]
    search_fields = ["name", "description"]
    readonly_fields = ["input_schema", "last_seen", "available"]
    inlines = [ToolActionInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("server").prefetch_related("actions")

    @display(description="scopes")
    def scopes(self, obj: Tool) -> str:
        return " ".join(f"{obj.name}:{a.name}" for a in obj.actions.all())


# --- Agents ------------------------------------------------------------------------------------


MIN_CLIENT_SECRET_LENGTH = 32


class AgentForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = [
            "name",
            "client_id",
            "client_type",
            "authorization_grant_type",
            "redirect_uris",
            "client_secret",
            "hash_client_secret",
            "user",
            "team",
            "has_scope_ceiling",
            "scope_ceiling",
            "access_token_lifetime",
            "refresh_token_lifetime",
        ]

    def clean(self):
        cleaned = super().clean()
        for field in ("access_token_lifetime", "refresh_token_lifetime"):
            if cleaned.get(field) == 0:
                self.add_error(field, "A lifetime is at least one second; leave it empty for the default.")
        # Secrets are hashed with one fast HMAC (console.hashers): only their length protects them.
        secret = cleaned.get("client_secret") or ""
        if "client_secret" in self.changed_data and secret and len(secret) < MIN_CLIENT_SECRET_LENGTH:
            self.add_error(
                "client_secret",
                f"A client secret is at least {MIN_CLIENT_SECRET_LENGTH} characters; keep the generated one.",
            )
        return cleaned


@admin.register(Agent)
class AgentAdmin(RevokeActions, ModelAdmin):
    form = AgentForm
    list_display = ["name", "client_id", "status", "registration_source", "user", "team", "created", "events"]
    list_filter = ["status", "registration_source", "client_type", "team"]
    search_fields = ["name", "client_id", "team", "user__username"]
    autocomplete_fields = ["user"]
    filter_horizontal = ["scope_ceiling"]
    actions = ["approve", "suspend", "reactivate", "revoke_tokens"]
    actions_detail = ["approve_agent", "suspend_agent", "reactivate_agent", "revoke_agent_tokens_page"]

    def get_fieldsets(self, request, obj=None):
        identity = ["name", "client_id", "client_type", "authorization_grant_type", "redirect_uris"]
        if obj is None:
            identity += ["client_secret", "hash_client_secret"]  # shown before the first save only
        fieldsets = [
            (None, {"fields": identity}),
            ("Owner", {"fields": ["user", "team"]}),
            (
                "Limits",
                {
                    "fields": [
                        "has_scope_ceiling",
                        "scope_ceiling",
                        "access_token_lifetime",
                        "refresh_token_lifetime",
                    ]
                },
            ),
        ]
        if obj is not None:
            fieldsets.append(
                ("Lifecycle", {"fields": ["status", "registration_source", "created", "updated"]})
            )
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        # Status changes go through the actions (audited); how the agent registered never changes.
        readonly = ["status", "registration_source", "created", "updated"]
        return readonly + ["client_id"] if obj is not None else readonly

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "scope_ceiling":
            kwargs["queryset"] = ToolAction.objects.select_related("tool__server")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @display(description="audit")
    def events(self, obj: Agent) -> str:
        return events_link(agent=obj.client_id)

    def _set_status(self, request, agents, status: str, verb: str, only_from: str | None = None) -> None:
        done, refused = [], []
        for agent in agents:
            try:
                set_agent_status(agent, status, by=request.user, only_from=only_from)
                done.append(agent.name)
            except AgentStatusError as error:
                refused.append(f"{agent.name}: {error}")
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Approve the selected agents", permissions=["change"])
    def approve(self, request, queryset):
        self._set_status(request, queryset, Agent.Status.ACTIVE, "Approved", Agent.Status.PENDING)

    @admin.action(description="Suspend the selected agents", permissions=["change"])
    def suspend(self, request, queryset):
        self._set_status(request, queryset, Agent.Status.SUSPENDED, "Suspended")

    @admin.action(description="Reactivate the selected agents", permissions=["change"])
    def reactivate(self, request, queryset):
        self._set_status(request, queryset, Agent.Status.ACTIVE, "Reactivated", Agent.Status.SUSPENDED)

    @admin.action(description="Revoke all tokens of the selected agents", permissions=["revoke"])
    def revoke_tokens(self, request, queryset):
        return self._revoke_agents(
            request,
            list(queryset),
            hidden=action_selection("revoke_tokens", queryset),
            cancel=request.get_full_path(),
        )

    @action(description="Approve", url_path="approve", permissions=["change"], icon="check")
    def approve_agent(self, request, object_id):
        return self._status_page(
            request, object_id, Agent.Status.ACTIVE, "Approve", "Approved", Agent.Status.PENDING
        )

    @action(description="Suspend", url_path="suspend", permissions=["change"], icon="pause")
    def suspend_agent(self, request, object_id):
        return self._status_page(request, object_id, Agent.Status.SUSPENDED, "Suspend", "Suspended")

    @action(description="Reactivate", url_path="reactivate", permissions=["change"], icon="play_arrow")
    def reactivate_agent(self, request, object_id):
        return self._status_page(
            request, object_id, Agent.Status.ACTIVE, "Reactivate", "Reactivated", Agent.Status.SUSPENDED
        )

    def _status_page(
        self, request, object_id, status: str, button: str, verb: str, only_from: str | None = None
    ):
        agent = object_or_404(self, request, object_id)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            self._set_status(request, [agent], status, verb, only_from)
            return redirect(change_url(agent))
        return confirm_page(
            self,
            request,
            title=f"{button} {agent.name}",
            question=f"{button} {agent.name} (now {agent.status})?",
            effects=[STATUS_EFFECTS[status]],
            button=button,
            cancel_url=change_url(agent),
        )

    @action(description="Revoke all tokens", url_path="revoke-tokens", permissions=["revoke"], icon="block")
    def revoke_agent_tokens_page(self, request, object_id):
        agent = object_or_404(self, request, object_id)
        return self._revoke_agents(request, [agent], hidden=None, cancel=change_url(agent))

    def _revoke_agents(self, request, agents: list[Agent], *, hidden, cancel: str):
        return confirm_then_revoke(
            self,
            request,
            agents,
            revoke_agent_tokens,
            title="Revoke all tokens of " + ", ".join(a.name for a in agents),
            question="Revoke every delegation and token of these agents?",
            effects=[
                f"{a.name}: {a.delegations.filter(status__in=Delegation.LIVE).count()} live or pending "
                "delegation(s) and all their tokens end now; humans must consent again."
                for a in agents
            ]
            + ["Other agents keep working."],
            button="Revoke all tokens",
            hidden=hidden,
            cancel=cancel,
        )


STATUS_EFFECTS = {
    Agent.Status.ACTIVE: "The agent may authorize and its tokens work again.",
    Agent.Status.SUSPENDED: (
        "Every token of the agent is inactive from the next introspection; nothing is deleted."
    ),
}


# --- Delegations ---------------------------------------------------------------------------------


class DecisionForm(forms.Form):
    comment = forms.CharField(
        required=False,
        label="Comment",
        help_text="Shown to the human; required to deny.",
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 3}),
    )


@admin.register(Delegation)
class DelegationAdmin(ModelAdmin):
    list_display = [
        "human",
        "agent",
        "server",
        "scope",
        "status",
        "created",
        "approved_by",
        "expires",
        "last_used",
    ]
    list_filter = ["status", "server", "agent"]
    search_fields = ["human__username", "agent__name", "agent__client_id", "server__name"]
    readonly_fields = [
        "human",
        "agent",
        "server",
        "scope",
        "status",
        "approved_by",
        "decided",
        "decision_comment",
        "created",
        "updated",
        "expires",
        "revoked",
        "last_used",
    ]
    actions = ["revoke"]
    actions_detail = ["decide_page"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("human", "agent", "server", "approved_by")

    @admin.action(description="Revoke the selected delegations and their tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = revoke_delegations(queryset, by=request.user, why="admin")
        self.message_user(request, f"Revoked {count} delegation(s).", messages.SUCCESS)

    @action(
        description="Approve or deny",
        url_path="decide",
        permissions=["approve"],
        icon="gavel",
    )
    def decide_page(self, request, object_id):
        delegation = object_or_404(self, request, object_id)
        form = DecisionForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            comment = form.cleaned_data["comment"]
            try:
                if "deny" in request.POST:
                    deny_delegation(delegation, by=request.user, comment=comment)
                    self.message_user(request, f"Denied: {delegation}.", messages.SUCCESS)
                else:
                    approve_delegation(delegation, by=request.user, comment=comment)
                    self.message_user(request, f"Approved: {delegation}.", messages.SUCCESS)
                return redirect(reverse("admin:policies_delegation_changelist") + "?status__exact=pending")
            except DelegationStateError as error:
                form.add_error(None, str(error))
        tools = {t.name: t for t in Tool.objects.filter(server=delegation.server)}
        rows = [(scope, tools.get(scope.partition(":")[0])) for scope in sorted(delegation.scopes)]
        return admin_page(
            self,
            request,
            "admin/policies/delegation/decide.html",
            f"Approve or deny: {delegation}",
            delegation=delegation,
            rows=rows,
            form=form,
            delegation_url=change_url(delegation),
        )

    def has_approve_permission(self, request, obj=None) -> bool:
        # A method, not the dotted name: unfold's system check would query the permission table
        # before the first migrate.
        return request.user.has_perm("policies.approve_delegation")

    def has_add_permission(self, request):
        return False  # delegations come from a human's consent only

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the trail refers to them


# --- Policies ----------------------------------------------------------------------------------


class DelegationPolicyForm(forms.ModelForm):
    class Meta:
        model = DelegationPolicy
        fields = [
            "group",
            "name",
            "agents",
            "may_delegate",
            "approval_risk",
            "approval_required",
            "max_delegation_lifetime",
        ]

    def clean(self):
        cleaned = super().clean()
        errors = DelegationPolicy.scope_errors(
            cleaned.get("may_delegate") or [],
            cleaned.get("approval_required") or [],
            cleaned.get("agents") or [],
        )
        for field, field_errors in errors.items():
            self.add_error(field, field_errors)
        return cleaned


@admin.register(DelegationPolicy)
class DelegationPolicyAdmin(ModelAdmin):
    form = DelegationPolicyForm
    list_display = ["group", "name", "approval_risk", "max_delegation_lifetime", "scope_count"]
    list_filter = ["group", "approval_risk"]
    search_fields = ["group__name", "name"]
    filter_horizontal = ["agents", "may_delegate", "approval_required"]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("group").annotate(scope_total=Count("may_delegate"))
        )

    @display(description="scopes", ordering="scope_total")
    def scope_count(self, obj: DelegationPolicy) -> int:
        return obj.scope_total

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name in ("may_delegate", "approval_required"):
            kwargs["queryset"] = ToolAction.objects.select_related("tool__server")
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ExchangePolicyForm(forms.ModelForm):
    class Meta:
        model = ExchangePolicy
        fields = ["source", "target", "scopes"]

    def clean(self):
        cleaned = super().clean()
        for field, field_errors in ExchangePolicy.scope_errors(
            cleaned.get("target"), cleaned.get("scopes") or []
        ).items():
            self.add_error(field, field_errors)
        return cleaned


@admin.register(ExchangePolicy)
class ExchangePolicyAdmin(ModelAdmin):
    """Token exchange hops (RFC 8693): which MCP server may exchange tokens for which other one."""

    form = ExchangePolicyForm
    list_display = ["source", "target", "scope_count"]
    list_filter = ["source", "target"]
    search_fields = ["source__name", "target__name"]
    filter_horizontal = ["scopes"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("source", "target")
            .annotate(scope_total=Count("scopes"))
        )

    @display(description="scopes", ordering="scope_total")
    def scope_count(self, obj: ExchangePolicy) -> int:
        return obj.scope_total

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "scopes":
            kwargs["queryset"] = ToolAction.objects.select_related("tool__server")
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(PolicySetting)
class PolicySettingAdmin(ModelAdmin):
    list_display = ["key", "value"]


# --- Tokens (metadata only: the token values are never shown) ------------------------------------


class TokenAdmin(ModelAdmin):
    list_filter = ["application"]
    search_fields = ["user__username", "application__name", "application__client_id"]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "application", "delegation__server")

    @display(description="MCP server")
    def server(self, obj) -> str:
        return obj.delegation.server.name if obj.delegation else "—"

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        tokens = list(queryset)
        for token in tokens:
            revoke_token(token, by=request.user)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: revocation is audited and revokes the pair

    def get_fields(self, request, obj=None):
        return self.list_display


@admin.register(AccessToken)
class AccessTokenAdmin(TokenAdmin):
    list_display = ["id", "user", "application", "server", "delegation", "scope", "expires", "created"]
    readonly_fields = list_display


@admin.register(RefreshToken)
class RefreshTokenAdmin(TokenAdmin):
    list_display = ["id", "user", "application", "server", "delegation", "created", "revoked"]
    readonly_fields = list_display
    list_filter = ["application", ("revoked", admin.EmptyFieldListFilter)]
