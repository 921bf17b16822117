"""Audit pages outside the admin (export downloads)."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
