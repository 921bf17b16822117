"""Recording coverage beyond the protocol doors: logins, failed logins and every console change.

django-auditlog keeps the model diffs (its middleware names the acting admin for admin and API
requests; ``audit.actor.acting_as`` does it for Celery tasks). Each of its log entries is also
bridged into the trail as a ``console.change`` event, so console changes are chained and exported
with everything else.
"""

from __future__ import annotations

from typing import Any

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.events import record
from audit.models import LegalHold
from identity.sso import login_method
from policies.models import (
    Agent,
    Delegation,
    DelegationPolicy,
    ExchangePolicy,
    McpServer,
    PolicySetting,
    Tool,
    ToolAction,
)

MAX_USERNAME = 150
ACTIONS = {
    LogEntry.Action.CREATE: "create",
    LogEntry.Action.UPDATE: "update",
    LogEntry.Action.DELETE: "delete",
    LogEntry.Action.ACCESS: "access",
}


def track_console_changes() -> None:
    """Register the console's models with django-auditlog (once, from ``AuditConfig.ready``).

    Secrets and hashes are left out of the diffs; so are the timestamps that change on use
    (a delegation's last use, a tool's last import), which are not console changes.
    """
    _register(McpServer, exclude=["secret_hash"])
    _register(Tool, exclude=["last_seen"])
    _register(ToolAction)
    _register(Agent, exclude=["client_secret", "updated"], m2m=["scope_ceiling"])
    _register(Delegation, exclude=["last_used", "updated"])
    _register(DelegationPolicy, m2m=["agents", "may_delegate", "approval_required"])
    _register(ExchangePolicy, m2m=["scopes"])  # a hop grants MCP servers reach (RFC 8693)
    _register(PolicySetting)
    _register(get_user_model(), exclude=["password", "last_login"], m2m=["groups"])
    _register(Group, m2m=["permissions"])
    _register(LegalHold)


def _register(model: type, exclude: list[str] = (), m2m: list[str] = ()) -> None:
    # auditlog diffs reverse relations too, and can only print them as "<Model>.None": leave them out.
    reverse = [field.name for field in model._meta.get_fields() if field.auto_created and not field.concrete]
    auditlog.register(model, exclude_fields=[*exclude, *reverse], m2m_fields=set(m2m))


@receiver(post_save, sender=LogEntry, dispatch_uid="audit.console_change")
def record_console_change(sender, instance: LogEntry, created: bool, raw: bool = False, **kwargs) -> None:
    """Bridge each new auditlog entry into the trail, in the same transaction as the change.

    On the entry's own save rather than auditlog's ``post_log``, which many-to-many changes skip.
    """
    if not created or raw:
        return
    entry = instance
    detail: dict[str, Any] = {
        "model": f"{entry.content_type.app_label}.{entry.content_type.model}",
        "object_pk": str(entry.object_pk),
        "object_repr": entry.object_repr,
        "action": ACTIONS.get(entry.action, str(entry.action)),
        "changes": entry.changes_dict,
        "log_entry_id": entry.pk,
    }
    subjects = _subjects(entry.content_type.model_class(), entry.object_pk)
    # The event's client_ip comes from the request metadata (TRUSTED_PROXIES), not from auditlog.
    record("console.change", outcome="allow", actor=entry.actor, detail=detail, **subjects)


def _subjects(model: type | None, pk: str) -> dict[str, Any]:
    """The human, agent, server or delegation a changed object is about, for search by them.

    Empty once the object is deleted: the entry's changes then hold its last field values.
    """
    if model is Delegation:
        delegation = Delegation.objects.select_related("human", "agent", "server").filter(pk=pk).first()
        if delegation is not None:
            return {
                "delegation": delegation,
                "human": delegation.human,
                "agent": delegation.agent,
                "server": delegation.server,
            }
    elif model is Tool:
        tool = Tool.objects.select_related("server").filter(pk=pk).first()
        if tool is not None:
            return {"server": tool.server, "tool": tool.name}
    elif model is Agent:
        return {"agent": Agent.objects.filter(pk=pk).first()}
    elif model is McpServer:
        return {"server": McpServer.objects.filter(pk=pk).first()}
    elif model is get_user_model():
        return {"human": get_user_model()._default_manager.filter(pk=pk).first()}
    return {}


@receiver(user_logged_in, dispatch_uid="audit.login")
def record_login(sender, request, user, **kwargs) -> None:
    detail = {"method": login_method(user)}  # "sso" or "password"
    record("auth.login", outcome="allow", actor=user, human=user, request=request, detail=detail)


@receiver(user_login_failed, dispatch_uid="audit.login_failed")
def record_failed_login(sender, credentials: dict, request=None, **kwargs) -> None:
    """The username as given (truncated), never the password: Django passes the rest masked anyway."""
    user_model = get_user_model()
    username = str(credentials.get(user_model.USERNAME_FIELD, ""))[:MAX_USERNAME]
    human = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    sso = getattr(request, "sso_refusal", None)  # why the SSO provider's answer was refused (identity.sso)
    record(
        "auth.login_failed",
        outcome="deny",
        reason=sso["reason"] if sso else "invalid_credentials",
        human=human,
        request=request,
        detail={"username": username, **(sso["detail"] if sso else {})},
    )
