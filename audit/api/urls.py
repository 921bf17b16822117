"""The audit API: MCP servers report events; auditors search and export."""

from django.urls import path

from audit.api import server_events, views

urlpatterns: list = [
    path("server-events/", server_events.ServerEvents.as_view(), name="audit-server-events"),
    path("events/", views.EventSearch.as_view(), name="audit-events"),
    path("events/export/", views.EventExport.as_view(), name="audit-events-export"),
    path("exports/", views.ExportJobs.as_view(), name="audit-exports"),
    path("exports/<uuid:pk>/", views.ExportJob.as_view(), name="audit-export-job"),
    path("exports/<uuid:pk>/download/", views.ExportDownload.as_view(), name="audit-export-download"),
]
