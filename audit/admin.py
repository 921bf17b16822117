"""The audit trail in the console: search events, follow them to delegations and tokens, exports,
legal holds and chain checkpoints. Everything is read-only except creating and releasing holds."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin
from unfold.contrib.filters.admin import DropdownFilter, RangeDateTimeFilter, TextFilter
from unfold.decorators import action

from audit.events import record
from audit.models import AuditCheckpoint, AuditEvent, AuditExport, LegalHold


class ExactTextFilter(TextFilter):
    """A text box matching one column exactly (exact matches use the table's indexes)."""

    column = ""

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.column: value}) if value else queryset


# Parameter names are the export filter names, so audit.links and exports speak the same query.
class HumanFilter(ExactTextFilter):
    title, parameter_name, column = "human (username)", "human", "human_username"


class AgentFilter(ExactTextFilter):
    title, parameter_name, column = "agent (client_id)", "agent", "agent_client_id"


class ServerFilter(ExactTextFilter):
    title, parameter_name, column = "MCP server", "server", "server_name"


class ToolFilter(ExactTextFilter):
    title, parameter_name, column = "tool", "tool", "tool"


class EventTypeFilter(ExactTextFilter):
    title, parameter_name, column = "event type", "event_type", "event_type"


class OutcomeFilter(DropdownFilter):
    title, parameter_name = "outcome", "outcome"

    def lookups(self, request, model_admin):
        return AuditEvent.Outcome.choices

    def queryset(self, request, queryset):
        return queryset.filter(outcome=self.value()) if self.value() else queryset


def _admin_link(viewname: str, args: list, text: str, query: str = "") -> str:
    try:
        url = reverse(viewname, args=args)
    except NoReverseMatch:
        return text
    return format_html('<a href="{}{}">{}</a>', url, query, text)


class ReadOnly:
    # A permission method, not "audit.export_auditevent" in @action: unfold's system check would
    # query the permission table, so `migrate` could not run on an empty database.
    def has_export_permission(self, request) -> bool:
        return request.user.has_perm("audit.export_auditevent")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnly, ModelAdmin):
    """Read-only: the trail is append-only."""

    list_display = [
        "id",
        "occurred",
        "event_type",
        "outcome",
        "reason",
        "human_username",
        "agent_client_id",
        "server_name",
        "tool",
        "action",
    ]
    list_filter = [
        HumanFilter,
        AgentFilter,
        ServerFilter,
        ToolFilter,
        OutcomeFilter,
        EventTypeFilter,
        ("occurred", RangeDateTimeFilter),
    ]
    list_filter_submit = True  # text and range filters apply on submit
    # Exact matches on indexed columns only: a substring search would scan the whole trail.
    search_fields = ["human_username", "agent_client_id", "token_checksum"]
    search_help_text = "An exact username, agent client_id or token checksum."
    show_full_result_count = False  # no COUNT(*) over the whole trail on every page
    readonly_fields = ["delegation_link", "token_links"]
    actions_list = ["export_events"]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = Q(human_username=term) | Q(agent_client_id=term) | Q(token_checksum=term)
        return queryset.filter(matches), False

    @admin.display(description="delegation")
    def delegation_link(self, event: AuditEvent) -> str:
        if event.delegation_id is None:
            return "-"
        return _admin_link(
            "admin:policies_delegation_change", [event.delegation_id], f"#{event.delegation_id}"
        )

    @admin.display(description="tokens")
    def token_links(self, event: AuditEvent) -> str:
        links = []
        if event.token_id is not None:
            text = f"access token #{event.token_id}"
            links.append(_admin_link("admin:policies_accesstoken_change", [event.token_id], text))
        if event.delegation_id is not None:
            query = f"?delegation__id__exact={event.delegation_id}"
            for name, text in (("accesstoken", "access tokens"), ("refreshtoken", "refresh tokens")):
                links.append(
                    _admin_link(f"admin:policies_{name}_changelist", [], f"{text} of the delegation", query)
                )
        return format_html_join(" · ", "{}", ((link,) for link in links)) if links else "-"

    @action(description="Export…", url_path="export", permissions=["export"])
    def export_events(self, request):
        return redirect("audit-export-new")


@admin.register(AuditExport)
class AuditExportAdmin(ReadOnly, ModelAdmin):
    list_display = ["created", "format", "status", "rows_written", "rows_total", "requested_by", "open_link"]
    list_filter = ["status", "format"]
    actions_list = ["new_export"]

    @admin.display(description="progress / download")
    def open_link(self, job: AuditExport) -> str:
        return format_html('<a href="{}">open</a>', reverse("audit-export-progress", args=[job.pk]))

    @action(description="New export", url_path="new", permissions=["export"])
    def new_export(self, request):
        return redirect("audit-export-new")


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnly, ModelAdmin):
    list_display = ["last_event_id", "event_count", "chain_hash", "created"]


@admin.register(LegalHold)
class LegalHoldAdmin(ModelAdmin):
    """Holds are created and released, never edited or deleted: what was held stays on record."""

    list_display = [
        "name",
        "human_id",
        "agent_client_id",
        "server_name",
        "since",
        "until",
        "created",
        "released",
    ]
    list_filter = [("released", admin.EmptyFieldListFilter)]
    fields = ["name", "reason", "human_id", "agent_client_id", "server_name", "since", "until"]
    actions = ["release"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.fields, "created_by", "created", "released"] if obj else []

    def get_fields(self, request, obj=None):
        return [*self.fields, "created_by", "created", "released"] if obj else self.fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            super().save_model(request, obj, form, change)
            record("legal_hold.created", outcome="allow", actor=request.user, detail=_hold_detail(obj))

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Release the selected holds", permissions=["change"])
    def release(self, request, queryset):
        holds = list(queryset.filter(released__isnull=True))
        LegalHold.objects.filter(pk__in=[hold.pk for hold in holds]).update(released=timezone.now())
        for hold in holds:
            record("legal_hold.released", outcome="allow", actor=request.user, detail=_hold_detail(hold))
        self.message_user(request, f"Released {len(holds)} legal hold(s).")


def _hold_detail(hold: LegalHold) -> dict:
    return {"hold_id": hold.pk, "name": hold.name}
