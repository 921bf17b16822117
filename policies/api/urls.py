"""The management API for servers, tools, agents, policies, delegations and revocation."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
