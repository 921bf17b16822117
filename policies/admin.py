"""Admin registrations: the console's first screens (issue 3 grows them into the full console)."""

from django.contrib import admin

from policies.models import Agent, Delegation, DelegationPolicy, McpServer, Tool, ToolAction
from policies.services import revoke_delegations


class ToolActionInline(admin.TabularInline):
    model = ToolAction
    extra = 0


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    list_display = ["name", "server", "risk"]
    list_filter = ["server", "risk"]
    inlines = [ToolActionInline]


class ToolInline(admin.TabularInline):
    model = Tool
    extra = 0
    show_change_link = True


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    list_display = ["name", "resource", "active", "client_id"]
    list_filter = ["active"]
    search_fields = ["name", "resource"]
    readonly_fields = ["client_id"]
    inlines = [ToolInline]

    def save_model(self, request, obj, form, change):
        if not change:
            secret = obj.set_new_credentials()
            self.message_user(request, f"Introspection credentials (shown once): {obj.client_id} / {secret}")
        super().save_model(request, obj, form, change)


# DOT registers its stock admin for the swapped Application model; the console's replaces it.
admin.site.unregister(Agent)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "client_id", "status", "registration_source", "client_type", "created"]
    list_filter = ["status", "registration_source", "client_type"]
    search_fields = ["name", "client_id"]
    readonly_fields = ["registration_source", "created", "updated"]


@admin.register(Delegation)
class DelegationAdmin(admin.ModelAdmin):
    list_display = ["human", "agent", "server", "scope", "status", "created"]
    list_filter = ["status", "server"]
    search_fields = ["human__username", "agent__name", "agent__client_id"]
    readonly_fields = [
        "human",
        "agent",
        "server",
        "scope",
        "status",
        "approved_by",
        "created",
        "updated",
        "revoked",
    ]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected delegations and their tokens")
    def revoke(self, request, queryset):
        count = revoke_delegations(queryset, by=request.user, why="admin")
        self.message_user(request, f"Revoked {count} delegation(s).")

    def has_add_permission(self, request):
        return False  # delegations come from a human's consent only


@admin.register(DelegationPolicy)
class DelegationPolicyAdmin(admin.ModelAdmin):
    list_display = ["group"]
    filter_horizontal = ["may_delegate"]
