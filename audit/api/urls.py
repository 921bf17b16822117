"""The audit API: MCP servers report events; auditors search and export."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
