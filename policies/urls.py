"""Pages for humans: "My agents"."""

from django.urls import path

from policies import views

urlpatterns = [
    path("my-agents/", views.my_agents, name="my-agents"),
    path("my-agents/<int:delegation_id>/revoke/", views.revoke_my_agent, name="my-agents-revoke"),
]
