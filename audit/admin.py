from django.contrib import admin

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only."""

    list_display = [
        "occurred",
        "event_type",
        "outcome",
        "reason",
        "human_username",
        "agent_name",
        "server_name",
        "tool",
        "action",
    ]
    list_filter = ["event_type", "outcome", "server_name"]
    search_fields = ["human_username", "agent_client_id", "agent_name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
