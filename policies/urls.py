"""Pages for humans: \"My agents\"."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
