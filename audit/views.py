"""The console's export pages: choose format and filters, then watch the job and download.

The pages poll and download through the audit API (audit.api.views), so there is one status and
one download endpoint, with one permission check, for the browser and for scripts.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from unfold.widgets import UnfoldAdminSelectWidget, UnfoldAdminTextInputWidget

from audit.export import EventFilterForm, ExportError
from audit.export.jobs import file_expired, start_export
from audit.models import AuditExport

EXPORT_PERMISSION = "audit.export_auditevent"


FORMAT_LABELS = {"csv": "CSV (spreadsheets)", "jsonl": "JSON Lines (SIEM, scripts)"}


class ExportForm(EventFilterForm):
    format = forms.ChoiceField(choices=list(FORMAT_LABELS.items()), widget=UnfoldAdminSelectWidget)
    field_order = ["format"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if name in ("since", "until"):
                field.widget = UnfoldAdminTextInputWidget(attrs={"type": "datetime-local", "step": "1"})
            elif name == "outcome":
                field.widget = UnfoldAdminSelectWidget(choices=field.choices)
            elif name != "format":
                field.widget = UnfoldAdminTextInputWidget()


def _page(request, template: str, context: dict):
    return render(request, template, {**admin.site.each_context(request), **context})


@permission_required(EXPORT_PERMISSION, raise_exception=True)
def export_new(request):
    """Choose a format and filters; starting the export opens its progress page."""
    form = ExportForm(request.POST or None, initial={"format": "csv"})
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        fmt = data.pop("format")
        try:
            job = start_export({k: v for k, v in data.items() if v not in (None, "")}, fmt, by=request.user)
        except ExportError as error:
            form.add_error(None, str(error))
        else:
            return redirect("audit-export-progress", job.pk)
    return _page(request, "audit/export_new.html", {"form": form, "title": "Export audit events"})


@permission_required(EXPORT_PERMISSION, raise_exception=True)
def export_progress(request, pk):
    """The job's progress bar, which polls the job's status until the file can be downloaded.

    Once the file expired the page says so (rendered here, and by the poll) instead of a link.
    """
    job = get_object_or_404(AuditExport, pk=pk)
    return _page(
        request,
        "audit/export_progress.html",
        {
            "job": job,
            "title": f"Audit export ({FORMAT_LABELS[job.format]})",
            "status_url": reverse("audit-export-job", args=[job.pk]),
            "expired": file_expired(job),
            "keep_hours": settings.AUDIT_EXPORT_KEEP_HOURS,
        },
    )


# Console pages: staff sign-in through the admin, then the export permission.
export_new = admin.site.admin_view(export_new)
export_progress = admin.site.admin_view(export_progress)
