"""Auditors' API: search the events, export them (streamed, or as a job with a manifest).

The streamed export cannot carry the file's SHA-256 (it is known only after the last byte), so its
headers give the row count and the last event id it covers; the full manifest comes with a job.
"""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from audit.export import (
    CONTENT_TYPES,
    FILTER_KEYS,
    ExportError,
    ExportRun,
    events_matching,
    file_name,
    parse_filters,
    record_export,
    stream_export,
)
from audit.export.jobs import ExportFileGone, file_expired, open_export_file, start_export
from audit.models import AuditEvent, AuditExport

FILTER_PARAMETERS = [
    OpenApiParameter(key, OpenApiTypes.DATETIME if key in ("since", "until") else OpenApiTypes.STR)
    for key in FILTER_KEYS
]
FORMAT_PARAMETER = OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "jsonl"], required=True)


class CanExportEvents(BasePermission):
    """Compliance auditors and security admins: the audit.export_auditevent permission."""

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm("audit.export_auditevent")


def filters_from(params, *, ignore: tuple[str, ...] = ()) -> dict:
    """Filters from query parameters or a body; a bad filter is a 400 naming it."""
    raw = {key: value for key, value in params.items() if key not in ignore and value not in (None, "")}
    try:
        return parse_filters(raw)
    except ExportError as error:
        raise ValidationError({"filters": [str(error)]}) from error


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = "__all__"


class NewestFirst(CursorPagination):
    # A cursor, not page numbers: no COUNT over tens of millions of rows, stable as events arrive.
    ordering = "-id"
    page_size = 100


@extend_schema(parameters=FILTER_PARAMETERS)
class EventSearch(generics.ListAPIView):
    """Audit events matching the filters, newest first (read-only)."""

    serializer_class = AuditEventSerializer
    pagination_class = NewestFirst
    queryset = AuditEvent.objects.none()  # for RolePermissions: audit.view_auditevent

    def get_queryset(self):
        return events_matching(filters_from(self.request.query_params, ignore=("cursor",)))


class FormatFromQuery(APIView):
    """?format= names the file format here, not one of DRF's renderers."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)


class EventExport(FormatFromQuery):
    """The matching events as one streamed CSV or JSON Lines file, in id order."""

    permission_classes = [IsAuthenticated, CanExportEvents]

    @extend_schema(
        parameters=[FORMAT_PARAMETER, *FILTER_PARAMETERS],
        responses={(200, media.split(";")[0]): OpenApiTypes.BINARY for media in CONTENT_TYPES.values()},
    )
    def get(self, request):
        fmt = request.query_params.get("format", "")
        try:
            run = ExportRun(filters_from(request.query_params, ignore=("format",)), fmt)
        except ExportError as error:
            raise ValidationError({"format": [str(error)]}) from error
        rows = run.count()
        record_export(run, door="api", rows=rows, by=request.user, request=request)
        response = StreamingHttpResponse(stream_export(run), content_type=CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{file_name(fmt)}"'
        response["X-Audit-Export-Rows"] = str(rows)
        response["X-Audit-Export-Through-Event"] = str(run.through_event_id)
        return response


class ExportExpired(APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "The export file has expired and was deleted; the job's manifest remains."
    default_code = "export_expired"


class AuditExportSerializer(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()
    expired = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = AuditExport
        fields = [
            "id",
            "format",
            "filters",
            "status",
            "rows_total",
            "rows_written",
            "progress",
            "created",
            "finished",
            "manifest",
            "error",
            "expired",
            "download",
        ]

    def get_progress(self, job: AuditExport) -> float:
        """0 to 1; 1 when done."""
        if job.status == AuditExport.Status.DONE:
            return 1.0
        return min(job.rows_written / job.rows_total, 1.0) if job.rows_total else 0.0

    def get_expired(self, job: AuditExport) -> bool:
        """True once the file was deleted (AUDIT_EXPORT_KEEP_HOURS after the job finished)."""
        return file_expired(job)

    def get_download(self, job: AuditExport) -> str | None:
        if job.status != AuditExport.Status.DONE or file_expired(job):
            return None
        return reverse("audit-export-download", args=[job.pk], request=self.context.get("request"))


class NewExportSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=AuditExport.Format.choices)
    filters = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, default=dict
    )


class ExportJobs(FormatFromQuery):
    """POST: start an export job (runs in a Celery worker); its status and download follow."""

    permission_classes = [IsAuthenticated, CanExportEvents]

    @extend_schema(request=NewExportSerializer, responses={202: AuditExportSerializer})
    def post(self, request):
        data = NewExportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        filters = {key: value for key, value in data.validated_data["filters"].items() if value != ""}
        try:
            job = start_export(filters, data.validated_data["format"], by=request.user)
        except ExportError as error:
            raise ValidationError({"filters": [str(error)]}) from error
        body = AuditExportSerializer(job, context={"request": request}).data
        location = reverse("audit-export-job", args=[job.pk], request=request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class ExportJob(generics.RetrieveAPIView):
    """An export job's status, progress and (when done) manifest and download link."""

    permission_classes = [IsAuthenticated, CanExportEvents]
    serializer_class = AuditExportSerializer
    queryset = AuditExport.objects.all()


class ExportDownload(APIView):
    """The finished job's file; 410 Gone once it expired."""

    permission_classes = [IsAuthenticated, CanExportEvents]

    @extend_schema(responses={200: OpenApiTypes.BINARY, 410: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        job = get_object_or_404(AuditExport, pk=pk, status=AuditExport.Status.DONE)
        try:
            file = open_export_file(job)
        except ExportFileGone as error:
            raise ExportExpired() from error
        response = FileResponse(
            file,
            as_attachment=True,
            filename=file_name(job.format, job.finished),
            content_type=CONTENT_TYPES[job.format],
        )
        response["X-Audit-Export-SHA256"] = job.manifest.get("sha256", "")
        return response
