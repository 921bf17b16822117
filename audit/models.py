"""Audit events: who (human), through which agent, on which server and tool, what was decided."""

from django.db import models


class AuditEvent(models.Model):
    class Outcome(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        ERROR = "error"

    id = models.BigAutoField(primary_key=True)
    occurred = models.DateTimeField(auto_now_add=True, db_index=True)
    event_type = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    reason = models.CharField(max_length=64, blank=True)
    # Who did it, when someone other than the human (an admin, an approver).
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True)
    # Denormalised on purpose: the trail must outlive deleted users, agents and servers.
    human_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    human_username = models.CharField(max_length=150, blank=True)
    agent_client_id = models.CharField(max_length=255, blank=True, db_index=True)
    agent_name = models.CharField(max_length=255, blank=True)
    server_name = models.CharField(max_length=100, blank=True)
    server_resource = models.CharField(max_length=500, blank=True)
    tool = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=50, blank=True)
    delegation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # The token's database id, never the token itself.
    token_id = models.BigIntegerField(null=True, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.occurred:%Y-%m-%d %H:%M:%S} {self.event_type} {self.outcome}"
