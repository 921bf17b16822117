"""Applying a policy document to the console, and exporting the console as one."""

from __future__ import annotations

import json
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import QuerySet

from audit.events import record
from console.roles import Role
from policies.models import DelegationPolicy, McpServer, PolicySetting, Tool, ToolAction
from policies.policy_file.document import (
    ApplyResult,
    GroupSpec,
    PolicyDocument,
    PolicyError,
    ServerSpec,
    ToolSpec,
)

# --- Applying ---------------------------------------------------------------------------------


def apply(document: PolicyDocument, *, dry_run: bool = False) -> ApplyResult:
    """Make the console match ``document``, in one transaction; nothing changes on a problem.

    A dry run makes the same changes and rolls them back, so it reports exactly what an apply
    would do.
    """
    result = ApplyResult(dry_run=dry_run)
    with transaction.atomic():
        problems = _console_problems(document)
        if problems:
            raise PolicyError(problems)
        for server_spec in document.servers:
            _apply_server(server_spec, result)
        for group_spec in document.groups:
            _apply_group(group_spec, result)
        _apply_settings(document.settings, result)
        if dry_run:
            transaction.set_rollback(True)
        else:
            record(
                "policy.applied",
                outcome="allow",
                detail={"source": document.source, "changes": result.changes},
            )
    return result


def _console_problems(document: PolicyDocument) -> list[str]:
    """What the console must already have for the document to apply: users, servers, scopes."""
    problems = []
    in_file = {spec.name for spec in document.servers}
    for spec in document.servers:
        holder = McpServer.objects.filter(resource=spec.resource).exclude(name=spec.name).first()
        if holder is not None:
            problems.append(
                document.problem(
                    f"{spec.path}.resource", f"'{spec.resource}' is the resource of server '{holder.name}'"
                )
            )
    User = get_user_model()
    wanted_users = {name for spec in document.groups for name in spec.members}
    known_users = set(
        User.objects.filter(**{f"{User.USERNAME_FIELD}__in": wanted_users}).values_list(
            User.USERNAME_FIELD, flat=True
        )
    )
    for spec in document.groups:
        for index, username in enumerate(spec.members):
            if username not in known_users:
                problems.append(
                    document.problem(f"{spec.path}.members[{index}]", f"there is no user '{username}'")
                )
        for server_name, scopes in spec.may_delegate.items():
            if server_name in in_file:
                continue
            path = f"{spec.path}.may_delegate.{server_name}"
            server = McpServer.objects.filter(name=server_name).first()
            if server is None:
                problems.append(
                    document.problem(path, f"there is no server '{server_name}' in the file or the console")
                )
                continue
            known = {
                action.scope
                for action in ToolAction.objects.filter(tool__server=server).select_related("tool")
            }
            for index, scope in enumerate(scopes):
                if scope not in known:
                    problems.append(
                        document.problem(
                            f"{path}[{index}]", f"'{scope}' is not a scope of server '{server_name}'"
                        )
                    )
    return problems


def _apply_server(spec: ServerSpec, result: ApplyResult) -> None:
    wanted = {
        "resource": spec.resource,
        "description": spec.description,
        "default_scopes": " ".join(spec.default_scopes),
        "active": spec.active,
    }
    server = McpServer.objects.filter(name=spec.name).first()
    if server is None:
        server = McpServer(name=spec.name, **wanted)
        secret = server.set_new_credentials()
        server.save()
        result.add("servers", "created", spec.name)
        if not result.dry_run:
            result.credentials[spec.name] = {"client_id": server.client_id, "client_secret": secret}
    else:
        changed = _update(server, wanted)
        if changed:
            result.add("servers", "updated", f"{spec.name} ({', '.join(changed)})")
    _sync_tools(server, spec.tools, result)


def _update(obj: McpServer | Tool, wanted: dict[str, Any]) -> list[str]:
    """Set the fields of ``obj`` that differ from ``wanted``; return their names."""
    changed = [name for name, value in wanted.items() if getattr(obj, name) != value]
    if changed:
        for name in changed:
            setattr(obj, name, wanted[name])
        obj.save(update_fields=changed)
    return changed


def _sync_tools(server: McpServer, tools: tuple[ToolSpec, ...], result: ApplyResult) -> None:
    existing = {tool.name: tool for tool in server.tools.prefetch_related("actions")}
    for spec in tools:
        label = f"{server.name}/{spec.name}"
        tool = existing.pop(spec.name, None)
        if tool is None:
            tool = Tool.objects.create(
                server=server, name=spec.name, risk=spec.risk, description=spec.description
            )
            result.add("tools", "created", label)
            have: set[str] = set()
        else:
            changed = _update(tool, {"risk": spec.risk, "description": spec.description})
            if changed:
                result.add("tools", "updated", f"{label} ({', '.join(changed)})")
            have = {action.name for action in tool.actions.all()}
        for action in spec.actions:
            if action not in have:
                ToolAction.objects.create(tool=tool, name=action)
                result.add("actions", "created", f"{label}:{action}")
        _remove_actions(tool.actions.exclude(name__in=spec.actions), result)
    for tool in sorted(existing.values(), key=lambda tool: tool.name):
        _remove_actions(tool.actions.all(), result)
        tool.delete()
        result.add("tools", "removed", f"{server.name}/{tool.name}")


def _remove_actions(actions: QuerySet[ToolAction], result: ApplyResult) -> None:
    """Delete tool actions, reporting the delegable scopes (of any group) that go with them."""
    actions = actions.select_related("tool__server")
    grants = DelegationPolicy.may_delegate.through.objects.filter(toolaction__in=actions).select_related(
        "delegationpolicy__group", "toolaction__tool__server"
    )
    for grant in grants:
        result.add(
            "delegable_scopes", "removed", _delegable_label(grant.delegationpolicy.group, grant.toolaction)
        )
    for action in actions:
        result.add("actions", "removed", f"{action.tool.server.name}/{action.scope}")
    actions.delete()


def _delegable_label(group: Group, action: ToolAction) -> str:
    return f"{group.name}: {action.tool.server.name}/{action.scope}"


def _apply_group(spec: GroupSpec, result: ApplyResult) -> None:
    group, created = Group.objects.get_or_create(name=spec.name)
    if created:
        result.add("groups", "created", spec.name)

    User = get_user_model()
    username = User.USERNAME_FIELD
    current = set(group.user_set.values_list(username, flat=True))
    wanted = set(spec.members)
    for user in User.objects.filter(**{f"{username}__in": wanted - current}).order_by(username):
        group.user_set.add(user)
        result.add("memberships", "created", f"{spec.name}: {user.get_username()}")
    for user in group.user_set.filter(**{f"{username}__in": current - wanted}).order_by(username):
        group.user_set.remove(user)
        result.add("memberships", "removed", f"{spec.name}: {user.get_username()}")

    actions = ToolAction.objects.filter(tool__server__name__in=spec.may_delegate).select_related(
        "tool__server"
    )
    wanted_actions = {
        action for action in actions if action.scope in spec.may_delegate[action.tool.server.name]
    }
    policy = DelegationPolicy.objects.filter(group=group).first()
    current_actions = set(policy.may_delegate.select_related("tool__server")) if policy else set()
    added = sorted(wanted_actions - current_actions, key=lambda a: _delegable_label(group, a))
    removed = sorted(current_actions - wanted_actions, key=lambda a: _delegable_label(group, a))
    if added and policy is None:
        policy = DelegationPolicy.objects.create(group=group)
    if added:
        policy.may_delegate.add(*added)
    if removed:
        policy.may_delegate.remove(*removed)
    for action in added:
        result.add("delegable_scopes", "created", _delegable_label(group, action))
    for action in removed:
        result.add("delegable_scopes", "removed", _delegable_label(group, action))


def _apply_settings(settings: dict[str, str], result: ApplyResult) -> None:
    for key, value in settings.items():
        row = PolicySetting.objects.filter(key=key).first()
        if row is None:
            PolicySetting.objects.create(key=key, value=value)
            result.add("settings", "created", f"{key}={value}")
        elif row.value != value:
            row.value = value
            row.save(update_fields=["value"])
            result.add("settings", "updated", f"{key}={value}")


# --- Exporting --------------------------------------------------------------------------------


def export() -> dict[str, Any]:
    """The console's servers, groups and stored settings, in the policy document shape.

    Optional keys at their default are left out. Settings never set keep following the
    environment's default, so only stored ones are exported.
    """
    servers = []
    for server in McpServer.objects.prefetch_related("tools__actions").order_by("name"):
        entry: dict[str, Any] = {"name": server.name, "resource": server.resource}
        if server.description:
            entry["description"] = server.description
        if server.default_scopes.split():
            entry["default_scopes"] = server.default_scopes.split()
        if not server.active:
            entry["active"] = False
        entry["tools"] = [_export_tool(tool) for tool in server.tools.all()]
        servers.append(entry)

    groups = []
    username = get_user_model().USERNAME_FIELD
    # Console roles are groups too, but they are not delegation policy.
    for group in Group.objects.exclude(name__in=list(Role)).order_by("name"):
        may_delegate: dict[str, list[str]] = {}
        policy = DelegationPolicy.objects.filter(group=group).first()
        if policy is not None:
            actions = policy.may_delegate.select_related("tool__server")
            for action in sorted(actions, key=lambda a: (a.tool.server.name, a.scope)):
                may_delegate.setdefault(action.tool.server.name, []).append(action.scope)
        members = list(group.user_set.order_by(username).values_list(username, flat=True))
        groups.append({"name": group.name, "members": members, "may_delegate": may_delegate})

    settings = {
        row.key: row.value for row in PolicySetting.objects.filter(key__in=PolicySetting.KEYS).order_by("key")
    }
    return {"servers": servers, "groups": groups, "settings": settings}


def _export_tool(tool: Tool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tool.name, "actions": [action.name for action in tool.actions.all()]}
    entry["risk"] = tool.risk
    if tool.description:
        entry["description"] = tool.description
    return entry


def dump(document: dict[str, Any], fmt: str) -> str:
    """A policy document as YAML or JSON text."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110)
