"""Applying a policy document to the console, and exporting the console as one."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from oauth2_provider.generators import generate_client_secret

from audit.events import record
from console.roles import Role
from policies.discovery import CONSOLE_SOURCE
from policies.models import (
    Agent,
    DelegationPolicy,
    ExchangePolicy,
    McpServer,
    PolicySetting,
    Tool,
    ToolAction,
)
from policies.policy_file.document import (
    AgentSpec,
    ApplyResult,
    ExchangeSpec,
    GroupSpec,
    PolicyDocument,
    PolicyError,
    PolicySpec,
    ServerSpec,
    ToolSpec,
)
from policies.services import AGENT_TRANSITIONS, set_agent_status

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
        # After the servers (ceilings name their scopes), before the groups (policies name agents).
        for agent_spec in document.agents:
            _apply_agent(agent_spec, result)
        for group_spec in document.groups:
            _apply_group(group_spec, result)
        # Hops not in the file are left as they are: removing one ends the tokens exchanged along it.
        for exchange_spec in document.exchange_policies:
            _apply_exchange(exchange_spec, result)
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
    wanted_users |= {spec.owner for spec in document.agents if spec.owner}
    known_users = set(
        User.objects.filter(**{f"{User.USERNAME_FIELD}__in": wanted_users}).values_list(
            User.USERNAME_FIELD, flat=True
        )
    )
    for spec in document.agents:
        if spec.owner and spec.owner not in known_users:
            problems.append(document.problem(f"{spec.path}.owner", f"there is no user '{spec.owner}'"))
        problems += _scope_problems(document, f"{spec.path}.scope_ceiling", spec.scope_ceiling, in_file)
        problems += _agent_problems(document, spec)
    wanted_agents = {client_id for spec in document.groups for p in spec.policies for client_id in p.agents}
    known_agents = set(Agent.objects.filter(client_id__in=wanted_agents).values_list("client_id", flat=True))
    known_agents |= {spec.client_id for spec in document.agents}
    for spec in document.groups:
        for index, username in enumerate(spec.members):
            if username not in known_users:
                problems.append(
                    document.problem(f"{spec.path}.members[{index}]", f"there is no user '{username}'")
                )
        for policy in spec.policies:
            for index, client_id in enumerate(policy.agents):
                if client_id not in known_agents:
                    problems.append(
                        document.problem(f"{policy.path}.agents[{index}]", f"there is no agent '{client_id}'")
                    )
            for key in ("may_delegate", "approval_required"):
                problems += _scope_problems(document, f"{policy.path}.{key}", getattr(policy, key), in_file)
    for spec in document.exchange_policies:
        for key in ("source", "target"):
            name = getattr(spec, key)
            if name not in in_file and not McpServer.objects.filter(name=name).exists():
                problems.append(
                    document.problem(
                        f"{spec.path}.{key}", f"there is no server '{name}' in the file or the console"
                    )
                )
        if spec.target not in in_file and McpServer.objects.filter(name=spec.target).exists():
            known = {
                a.scope
                for a in ToolAction.objects.filter(tool__server__name=spec.target).select_related("tool")
            }
            problems += [
                document.problem(
                    f"{spec.path}.scopes[{index}]", f"'{scope}' is not a scope of server '{spec.target}'"
                )
                for index, scope in enumerate(spec.scopes)
                if scope not in known
            ]
    return problems


def _scope_problems(
    document: PolicyDocument, path: str, scope_map: dict[str, tuple[str, ...]], in_file: set[str]
) -> list[str]:
    """Scopes of servers the file does not list must exist in the console."""
    problems = []
    for server_name, scopes in scope_map.items():
        if server_name in in_file:
            continue
        server_path = f"{path}.{server_name}"
        server = McpServer.objects.filter(name=server_name).first()
        if server is None:
            problems.append(
                document.problem(
                    server_path, f"there is no server '{server_name}' in the file or the console"
                )
            )
            continue
        known = {
            action.scope for action in ToolAction.objects.filter(tool__server=server).select_related("tool")
        }
        for index, scope in enumerate(scopes):
            if scope not in known:
                problems.append(
                    document.problem(
                        f"{server_path}[{index}]", f"'{scope}' is not a scope of server '{server_name}'"
                    )
                )
    return problems


def _agent_problems(document: PolicyDocument, spec: AgentSpec) -> list[str]:
    """The agent's own rules (redirect URIs, status changes), checked on a copy before anything changes."""
    agent = Agent.objects.filter(client_id=spec.client_id).first()
    problems = []
    if (
        agent is not None
        and agent.status != spec.status
        and (agent.status, spec.status) not in AGENT_TRANSITIONS
    ):
        problems.append(
            document.problem(
                f"{spec.path}.status", f"an agent that is {agent.status} cannot become {spec.status}"
            )
        )
    candidate = copy.copy(agent) if agent is not None else _new_agent(spec)
    for name, value in _agent_fields(spec).items():
        setattr(candidate, name, value)
    try:
        candidate.clean()
    except ValidationError as error:
        for field_name, messages in error.message_dict.items():
            key = AGENT_KEY_OF_FIELD.get(field_name, field_name)
            path = spec.path if field_name == NON_FIELD_ERRORS else f"{spec.path}.{key}"
            problems += [document.problem(path, message) for message in messages]
    return problems


# The agent's model field that the policy file names otherwise.
AGENT_KEY_OF_FIELD = {"user": "owner"}


def _agent_fields(spec: AgentSpec) -> dict[str, Any]:
    """The agent's plain fields as the file sets them (the owner by username, resolved on apply)."""
    return {
        "name": spec.name,
        "client_type": spec.client_type,
        "redirect_uris": " ".join(spec.redirect_uris),
        "team": spec.team,
        "has_scope_ceiling": spec.has_scope_ceiling,
        "access_token_lifetime": spec.access_token_lifetime,
        "refresh_token_lifetime": spec.refresh_token_lifetime,
    }


def _new_agent(spec: AgentSpec) -> Agent:
    # Agents from a file are registered by an admin, like those of the console: "manual".
    return Agent(
        client_id=spec.client_id,
        status=spec.status,
        authorization_grant_type=Agent.GRANT_AUTHORIZATION_CODE,
        registration_source=Agent.RegistrationSource.MANUAL,
    )


def _apply_agent(spec: AgentSpec, result: ApplyResult) -> None:
    User = get_user_model()
    wanted = _agent_fields(spec)
    wanted["user"] = User.objects.get(**{User.USERNAME_FIELD: spec.owner}) if spec.owner else None
    agent = Agent.objects.filter(client_id=spec.client_id).first()
    secret = None
    if agent is None:
        agent = _new_agent(spec)
        for name, value in wanted.items():
            setattr(agent, name, value)
        # DOT hashes the secret on save; the clear one exists only in this apply's report.
        agent.client_secret = secret = generate_client_secret()
        agent.save()
        result.add("agents", "created", spec.client_id)
        changed = []
    else:
        becomes_confidential = (
            agent.client_type != Agent.CLIENT_CONFIDENTIAL and spec.client_type == Agent.CLIENT_CONFIDENTIAL
        )
        changed = _update(agent, wanted)
        if becomes_confidential:
            # A public agent's stored secret was never handed out: give it one it can use.
            agent.client_secret = secret = generate_client_secret()
            agent.save(update_fields=["client_secret", "updated"])
            changed.append("client_secret")
        if agent.status != spec.status:
            set_agent_status(agent, spec.status, by=None)  # audited as agent.approved / suspended / ...
            changed.append("status")
    wanted_ceiling = _actions(spec.scope_ceiling)
    if set(agent.scope_ceiling.all()) != wanted_ceiling:
        agent.scope_ceiling.set(wanted_ceiling)
        changed.append("scope_ceiling")
    if changed:
        result.add("agents", "updated", f"{spec.client_id} ({', '.join(changed)})")
    if secret is not None and spec.client_type == Agent.CLIENT_CONFIDENTIAL and not result.dry_run:
        result.agent_secrets[spec.client_id] = secret


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


def _update(obj: McpServer | Tool | Agent | DelegationPolicy, wanted: dict[str, Any]) -> list[str]:
    """Set the fields of ``obj`` that differ from ``wanted``; return their names (``user``: ``owner``)."""
    changed = [name for name, value in wanted.items() if getattr(obj, name) != value]
    if changed:
        for name in changed:
            setattr(obj, name, wanted[name])
        auto_now = [field.name for field in obj._meta.concrete_fields if getattr(field, "auto_now", False)]
        obj.save(update_fields=changed + auto_now)
    return [AGENT_KEY_OF_FIELD.get(name, name) for name in changed]


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
            "delegable_scopes",
            "removed",
            f"{_policy_label(grant.delegationpolicy)}: {_scope_label(grant.toolaction)}",
        )
    for action in actions:
        result.add("actions", "removed", f"{action.tool.server.name}/{action.scope}")
    actions.delete()


def _scope_label(action: ToolAction) -> str:
    return f"{action.tool.server.name}/{action.scope}"


def _policy_label(policy: DelegationPolicy) -> str:
    """A group's main policy goes by the group's name, another one by both."""
    return f"{policy.group.name} ({policy.name})" if policy.name else policy.group.name


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

    existing = {policy.name: policy for policy in DelegationPolicy.objects.filter(group=group)}
    for policy_spec in spec.policies:
        _apply_policy(group, existing.pop(policy_spec.name, None), policy_spec, result)
    for policy in sorted(existing.values(), key=lambda p: p.name):
        label = _policy_label(policy)
        for action in sorted(policy.may_delegate.select_related("tool__server"), key=_scope_label):
            result.add("delegable_scopes", "removed", f"{label}: {_scope_label(action)}")
        policy.delete()
        result.add("policies", "removed", label)


def _actions(scope_map: dict[str, tuple[str, ...]]) -> set[ToolAction]:
    actions = ToolAction.objects.filter(tool__server__name__in=scope_map).select_related("tool__server")
    return {action for action in actions if action.scope in scope_map[action.tool.server.name]}


def _apply_policy(
    group: Group, policy: DelegationPolicy | None, spec: PolicySpec, result: ApplyResult
) -> None:
    """Make one delegation policy of ``group`` match ``spec``, reporting each change."""
    wanted_actions = _actions(spec.may_delegate)
    terms = {"approval_risk": spec.approval_risk, "max_delegation_lifetime": spec.max_delegation_lifetime}
    if policy is None:
        says_nothing = not (wanted_actions or spec.approval_risk or spec.max_delegation_lifetime)
        if not spec.name and says_nothing:
            return  # a group that may delegate nothing needs no main policy
        policy = DelegationPolicy.objects.create(group=group, name=spec.name, **terms)
        if spec.name:
            result.add("policies", "created", _policy_label(policy))
        changed = []
    else:
        changed = _update(policy, terms)
    label = _policy_label(policy)

    current = set(policy.may_delegate.select_related("tool__server"))
    added = sorted(wanted_actions - current, key=_scope_label)
    removed = sorted(current - wanted_actions, key=_scope_label)
    policy.may_delegate.add(*added)
    policy.may_delegate.remove(*removed)
    for verb, actions in (("created", added), ("removed", removed)):
        for action in actions:
            result.add("delegable_scopes", verb, f"{label}: {_scope_label(action)}")

    wanted_approval = _actions(spec.approval_required)
    if set(policy.approval_required.all()) != wanted_approval:
        policy.approval_required.set(wanted_approval)
        changed.append("approval_required")
    wanted_agents = set(Agent.objects.filter(client_id__in=spec.agents))
    if set(policy.agents.all()) != wanted_agents:
        policy.agents.set(wanted_agents)
        changed.append("agents")
    if changed:
        result.add("policies", "updated", f"{label} ({', '.join(changed)})")


def _apply_exchange(spec: ExchangeSpec, result: ApplyResult) -> None:
    hop, created = ExchangePolicy.objects.get_or_create(
        source=McpServer.objects.get(name=spec.source), target=McpServer.objects.get(name=spec.target)
    )
    wanted = _actions({spec.target: spec.scopes})
    if created:
        result.add("exchange_policies", "created", spec.label)
    elif wanted != set(hop.scopes.all()):
        result.add("exchange_policies", "updated", spec.label)
    hop.scopes.set(wanted)


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
    """The console's servers, agents, groups and stored settings, in the policy document shape.

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
        policies = {policy.name: policy for policy in DelegationPolicy.objects.filter(group=group)}
        main = policies.pop("", None)
        members = list(group.user_set.order_by(username).values_list(username, flat=True))
        entry: dict[str, Any] = {"name": group.name, "members": members}
        entry.update(_export_terms(main) if main else {"may_delegate": {}})
        if policies:
            entry["agent_policies"] = [
                {
                    "name": policy.name,
                    "agents": sorted(policy.agents.values_list("client_id", flat=True)),
                    **_export_terms(policy),
                }
                for policy in sorted(policies.values(), key=lambda p: p.name)
            ]
        groups.append(entry)

    settings = {
        row.key: row.value for row in PolicySetting.objects.filter(key__in=PolicySetting.KEYS).order_by("key")
    }
    document = {"servers": servers, "agents": _export_agents(), "groups": groups}
    hops = ExchangePolicy.objects.select_related("source", "target").prefetch_related("scopes__tool")
    if hops:
        document["exchange_policies"] = [
            {
                "source": hop.source.name,
                "target": hop.target.name,
                "scopes": sorted(a.scope for a in hop.scopes.all()),
            }
            for hop in hops
        ]
    return {**document, "settings": settings}


def _export_agents() -> list[dict[str, Any]]:
    """Every agent, however it registered; never its secret."""
    entries = []
    # The console's own discovery agent is built in, not policy: every console creates its own.
    agents = Agent.objects.exclude(registration_source=CONSOLE_SOURCE)
    for agent in agents.select_related("user").prefetch_related("scope_ceiling").order_by("client_id"):
        entry: dict[str, Any] = {"client_id": agent.client_id}
        if agent.name:
            entry["name"] = agent.name
        entry["client_type"] = agent.client_type
        entry["redirect_uris"] = agent.redirect_uris.split()
        entry["status"] = agent.status
        if agent.team:
            entry["team"] = agent.team
        if agent.user is not None:
            entry["owner"] = agent.user.get_username()
        if agent.has_scope_ceiling:
            entry["has_scope_ceiling"] = True
        ceiling = _scope_map(agent.scope_ceiling.all())
        if ceiling:
            entry["scope_ceiling"] = ceiling
        for key in ("access_token_lifetime", "refresh_token_lifetime"):
            if getattr(agent, key) is not None:
                entry[key] = getattr(agent, key)
        entries.append(entry)
    return entries


def _export_terms(policy: DelegationPolicy) -> dict[str, Any]:
    """may_delegate, and the optional terms of a policy that are not at their default."""
    terms: dict[str, Any] = {"may_delegate": _scope_map(policy.may_delegate.all())}
    if policy.approval_risk:
        terms["approval_risk"] = policy.approval_risk
    approval = _scope_map(policy.approval_required.all())
    if approval:
        terms["approval_required"] = approval
    if policy.max_delegation_lifetime is not None:
        terms["max_delegation_lifetime"] = policy.max_delegation_lifetime
    return terms


def _scope_map(actions: QuerySet[ToolAction]) -> dict[str, list[str]]:
    scope_map: dict[str, list[str]] = {}
    for action in sorted(actions.select_related("tool__server"), key=lambda a: (a.tool.server.name, a.scope)):
        scope_map.setdefault(action.tool.server.name, []).append(action.scope)
    return scope_map


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
