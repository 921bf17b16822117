"""Audit pages outside the admin: the console's export form and an export's progress."""

from django.urls import path

from audit import views

urlpatterns = [
    path("exports/new/", views.export_new, name="audit-export-new"),
    path("exports/<uuid:pk>/", views.export_progress, name="audit-export-progress"),
]
