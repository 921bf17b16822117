"""
Policy as code: a YAML or JSON document that declares MCP servers with their tools, which groups
may delegate which scopes, and console settings.

``parse`` checks everything the document alone can tell; ``apply`` checks it against the console
(users, servers the file does not list) and then makes the console match it, in one transaction;
``export`` writes the console out in the same shape, so export -> apply changes nothing.

What ``apply`` does with what the file does not mention:

- a server listed in the file is made to match it exactly: tools and actions of that server that
  the file does not list are removed (and with them the delegable scopes that named them);
- servers not listed are left alone; servers are known by name, so a new name is a new server
  (with new credentials), and a resource URI moves from one server to another in two applies;
- a group listed in the file gets exactly the file's members and may_delegate (for every
  server); groups not listed are left alone; users are never created or removed;
- settings not listed keep their value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import QuerySet

from audit.events import record
from policies.models import DelegationPolicy, McpServer, PolicySetting, Tool, ToolAction

RISKS = tuple(Tool.Risk.values)


@dataclass(frozen=True)
class Name:
    pattern: re.Pattern
    allowed: str


SERVER_NAME = Name(re.compile(r"[-a-zA-Z0-9_]+"), "letters, digits, - and _")  # McpServer.name is a slug
# The characters MCP allows in tool names; none of them breaks a `tool:action` scope-token.
TOOL_NAME = Name(re.compile(r"[A-Za-z0-9_.-]+"), "letters, digits, _ . and -")

SERVER_KEYS = ("name", "resource", "description", "default_scopes", "active", "tools")
TOOL_KEYS = ("name", "actions", "risk", "description")
GROUP_KEYS = ("name", "members", "may_delegate")

# Kinds of change an apply reports, with the word used for one item in the text report.
KINDS = {
    "servers": "server",
    "tools": "tool",
    "actions": "action",
    "groups": "group",
    "memberships": "member",
    "delegable_scopes": "delegable scope",
    "settings": "setting",
}
VERBS = {"created": "+", "updated": "~", "removed": "-"}


class PolicyError(Exception):
    """A policy document that cannot be applied; each problem names its line and key path."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ToolSpec:
    name: str
    actions: tuple[str, ...]
    risk: str
    description: str


@dataclass(frozen=True)
class ServerSpec:
    path: str  # key path in the document, e.g. servers[0]
    name: str
    resource: str
    description: str
    default_scopes: tuple[str, ...]
    active: bool
    tools: tuple[ToolSpec, ...]

    @property
    def scopes(self) -> set[str]:
        return {f"{tool.name}:{action}" for tool in self.tools for action in tool.actions}


@dataclass(frozen=True)
class GroupSpec:
    path: str
    name: str
    members: tuple[str, ...]
    may_delegate: dict[str, tuple[str, ...]]  # server name -> scopes


@dataclass
class PolicyDocument:
    source: str
    servers: list[ServerSpec]
    groups: list[GroupSpec]
    settings: dict[str, str]
    lines: dict[str, int]  # key path -> line, for problems found later against the console

    def problem(self, path: str, message: str) -> str:
        return f"line {self.lines[path]}: {path}: {message}" if path in self.lines else f"{path}: {message}"


@dataclass
class ApplyResult:
    dry_run: bool
    changes: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {kind: {verb: [] for verb in VERBS} for kind in KINDS}
    )
    # Credentials of servers created by this apply (never in a dry run): the only time the
    # secret exists in clear.
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, kind: str, verb: str, item: str) -> None:
        self.changes[kind][verb].append(item)

    @property
    def changed(self) -> bool:
        return any(items for verbs in self.changes.values() for items in verbs.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary; ``servers`` maps each server created to its client_id and client_secret."""
        return {
            "dry_run": self.dry_run,
            "changed": self.changed,
            "changes": self.changes,
            "servers": self.credentials,
        }

    def change_lines(self) -> list[str]:
        """One line per change, e.g. ``+ server calendar`` or ``- action calendar/x:write``."""
        return [
            f"{VERBS[verb]} {word} {item}"
            for kind, word in KINDS.items()
            for verb in VERBS
            for item in self.changes[kind][verb]
        ]


# --- Reading ----------------------------------------------------------------------------------


def read_policy_file(path: Path) -> PolicyDocument:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise PolicyError([f"cannot read the file: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise PolicyError([f"the file is not UTF-8 text (byte {error.start})"]) from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "<policy>") -> PolicyDocument:
    """Read a policy document, YAML or JSON; raise PolicyError listing every problem found."""
    if source.endswith(".json") or text.lstrip().startswith(("{", "[")):
        # JSON is YAML, but a JSON mistake reads best as a JSON error.
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise PolicyError(
                [f"line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"]
            ) from None
        # Valid JSON has tabs only as whitespace between tokens, and YAML refuses tabs there.
        text = text.replace("\t", " ")
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            raise PolicyError(["the policy document is empty"])
        reader = _Reader(loader)
        document = reader.document(root, source)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = " ".join(part for part in (error.context, error.problem) if part)
        raise PolicyError([f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {what}"]) from None
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise PolicyError(
            [f"line {line}: invalid YAML: {error.reason} (character #x{error.character:04x})"]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if reader.problems:
        raise PolicyError([problem for _, problem in sorted(reader.problems, key=lambda item: item[0])])
    return document


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _resource_problem(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        return "must be an absolute http or https URI, e.g. https://calendar.example.com/mcp"
    if "#" in value:
        return "must not have a fragment (RFC 8707)"
    if parts.username is not None:
        return "must not carry a user name or password"
    if len(value) > McpServer._meta.get_field("resource").max_length:
        return "is too long (at most 500 characters)"
    return None


class _Reader:
    """Walks the composed YAML tree (which keeps line numbers), collecting every problem.

    Readers of single values return None after recording why a value is wrong, or silently when
    the node is missing (the mapping reader has reported the missing key already). Readers of
    composite values return None when anything inside them had a problem.
    """

    def __init__(self, loader: yaml.SafeLoader):
        self.loader = loader
        self.problems: list[tuple[int, str]] = []  # (line, problem)
        self.lines: dict[str, int] = {}

    def fail(self, node: yaml.Node, path: str, message: str) -> None:
        line = node.start_mark.line + 1
        self.problems.append((line, f"line {line}: {path or 'document'}: {message}"))

    def fail_at(self, path: str, message: str) -> None:
        line = self.lines[path]
        self.problems.append((line, f"line {line}: {path}: {message}"))

    def scalar(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node) if isinstance(node, yaml.ScalarNode) else None

    # Shapes

    def mapping(
        self, node: yaml.Node | None, path: str, keys: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, yaml.Node] | None:
        """The known keys of a mapping; reports unknown, repeated and missing keys."""
        entries = self.entries(node, path)
        if entries is None:
            return None
        for key, (key_node, _) in entries.items():
            if key not in keys:
                self.fail(key_node, _child(path, key), f"unknown key (expected one of {', '.join(keys)})")
        for key in required:
            if key not in entries:
                self.fail(node, path, f"missing key '{key}'")
        return {key: value for key, (_, value) in entries.items() if key in keys}

    def entries(self, node: yaml.Node | None, path: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Any mapping with string keys, as {key: (key node, value node)}."""
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, "must be a mapping")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.fail(key_node, path, "keys must be strings")
            elif key in entries:
                self.fail(key_node, _child(path, key), "key given twice")
            else:
                entries[key] = (key_node, value_node)
                self.lines[_child(path, key)] = value_node.start_mark.line + 1
        return entries

    def sequence(self, node: yaml.Node | None, path: str) -> list[yaml.Node] | None:
        if node is None:
            return None
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, "must be a list")
            return None
        for index, item in enumerate(node.value):
            self.lines[f"{path}[{index}]"] = item.start_mark.line + 1
        return node.value

    def text(
        self, node: yaml.Node | None, path: str, name: Name | None = None, max_length: int = 200
    ) -> str | None:
        if node is None:
            return None
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            self.fail(node, path, "must be a non-empty string")
        elif len(value) > max_length:
            self.fail(node, path, f"is too long (at most {max_length} characters)")
        elif name is not None and not name.pattern.fullmatch(value):
            self.fail(node, path, f"'{value}' may contain only {name.allowed}")
        else:
            return value
        return None

    def description(self, node: yaml.Node | None, path: str) -> str | None:
        if node is None or _is_null(node):  # `description:` with nothing after it is no description
            return ""
        value = self.scalar(node)
        if not isinstance(value, str):
            self.fail(node, path, "must be a string")
            return None
        return value

    def boolean(self, node: yaml.Node | None, path: str) -> bool | None:
        if node is None:
            return True
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.fail(node, path, "must be true or false")
            return None
        return value

    def choice(self, node: yaml.Node | None, path: str, choices: tuple[str, ...]) -> str | None:
        if node is None:
            return None
        value = self.scalar(node)
        if value not in choices:
            self.fail(node, path, f"must be one of {', '.join(choices)}")
            return None
        return value

    def unique_list(
        self, node: yaml.Node | None, path: str, read: Callable[[yaml.Node, str], str | None]
    ) -> tuple[str, ...] | None:
        """A list of distinct items, each read by ``read``."""
        items = self.sequence(node, path)
        if items is None:
            return None
        start = len(self.problems)
        values: list[str] = []
        for index, item in enumerate(items):
            value = read(item, f"{path}[{index}]")
            if value in values:
                self.fail(item, f"{path}[{index}]", f"'{value}' is listed twice")
            elif value is not None:
                values.append(value)
        return tuple(values) if len(self.problems) == start else None

    def scope(self, node: yaml.Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is None:
            return None
        tool, _, action = value.partition(":")
        if not (TOOL_NAME.pattern.fullmatch(tool) and TOOL_NAME.pattern.fullmatch(action)):
            self.fail(node, path, f"'{value}' must be a scope of the form tool:action")
            return None
        return value

    def check_scopes(self, node: yaml.Node, path: str, scopes: tuple[str, ...], server: ServerSpec) -> None:
        for index, scope in enumerate(scopes):
            if scope not in server.scopes:
                self.fail(
                    node.value[index],
                    f"{path}[{index}]",
                    f"'{scope}' is not a scope of server '{server.name}'",
                )

    # The document

    def document(self, root: yaml.Node, source: str) -> PolicyDocument | None:
        top = self.mapping(root, "", ("servers", "groups", "settings"))
        if top is None:
            return None
        servers = self.servers(top.get("servers"))
        groups = self.groups(top.get("groups"), servers or [])
        settings = self.settings(top.get("settings"))
        if self.problems:
            return None
        return PolicyDocument(source, servers, groups, settings, self.lines)

    def servers(self, node: yaml.Node | None) -> list[ServerSpec]:
        specs: list[ServerSpec] = []
        names: dict[str, str] = {}
        resources: dict[str, str] = {}
        for index, item in enumerate(self.sequence(node, "servers") or []):
            spec = self.server(item, f"servers[{index}]")
            if spec is None:
                continue
            if spec.name in names:
                self.fail_at(
                    f"{spec.path}.name", f"server '{spec.name}' is already defined at {names[spec.name]}"
                )
            elif spec.resource in resources:
                self.fail_at(
                    f"{spec.path}.resource",
                    f"'{spec.resource}' is already the resource of {resources[spec.resource]}",
                )
            else:
                names[spec.name] = resources[spec.resource] = spec.path
                specs.append(spec)
        return specs

    def server(self, node: yaml.Node, path: str) -> ServerSpec | None:
        start = len(self.problems)
        fields = self.mapping(node, path, SERVER_KEYS, required=("name", "resource", "tools")) or {}
        name = self.text(fields.get("name"), f"{path}.name", SERVER_NAME, max_length=100)
        resource = self.text(fields.get("resource"), f"{path}.resource", max_length=1000)
        if resource is not None and (problem := _resource_problem(resource)):
            self.fail(fields["resource"], f"{path}.resource", problem)
        description = self.description(fields.get("description"), f"{path}.description")
        active = self.boolean(fields.get("active"), f"{path}.active")
        tools = self.tools(fields.get("tools"), f"{path}.tools")
        scopes_node = fields.get("default_scopes")
        default_scopes = self.unique_list(scopes_node, f"{path}.default_scopes", self.scope) or ()
        if len(self.problems) > start:
            return None
        spec = ServerSpec(path, name, resource, description, default_scopes, active, tools)
        self.check_scopes(scopes_node, f"{path}.default_scopes", default_scopes, spec)
        return spec if len(self.problems) == start else None

    def tools(self, node: yaml.Node | None, path: str) -> tuple[ToolSpec, ...]:
        specs: dict[str, ToolSpec] = {}
        for index, item in enumerate(self.sequence(node, path) or []):
            tool_path = f"{path}[{index}]"
            start = len(self.problems)
            fields = self.mapping(item, tool_path, TOOL_KEYS, required=("name", "actions", "risk")) or {}
            name = self.text(fields.get("name"), f"{tool_path}.name", TOOL_NAME, max_length=100)
            actions = self.unique_list(fields.get("actions"), f"{tool_path}.actions", self.action)
            risk = self.choice(fields.get("risk"), f"{tool_path}.risk", RISKS)
            description = self.description(fields.get("description"), f"{tool_path}.description")
            if len(self.problems) > start:
                continue
            if name in specs:
                self.fail(fields["name"], f"{tool_path}.name", f"tool '{name}' is listed twice")
            else:
                specs[name] = ToolSpec(name, actions, risk, description)
        return tuple(specs.values())

    def action(self, node: yaml.Node, path: str) -> str | None:
        return self.text(node, path, TOOL_NAME, max_length=50)

    def groups(self, node: yaml.Node | None, servers: list[ServerSpec]) -> list[GroupSpec]:
        in_file = {spec.name: spec for spec in servers}
        specs: dict[str, GroupSpec] = {}
        for index, item in enumerate(self.sequence(node, "groups") or []):
            spec = self.group(item, f"groups[{index}]", in_file)
            if spec is None:
                continue
            if spec.name in specs:
                self.fail_at(
                    f"{spec.path}.name", f"group '{spec.name}' is already defined at {specs[spec.name].path}"
                )
            else:
                specs[spec.name] = spec
        return list(specs.values())

    def group(self, node: yaml.Node, path: str, servers: dict[str, ServerSpec]) -> GroupSpec | None:
        start = len(self.problems)
        fields = self.mapping(node, path, GROUP_KEYS, required=GROUP_KEYS) or {}
        name = self.text(fields.get("name"), f"{path}.name", max_length=150)
        members = self.unique_list(fields.get("members"), f"{path}.members", self.username)
        may_delegate: dict[str, tuple[str, ...]] = {}
        for server_name, (_, scopes_node) in (
            self.entries(fields.get("may_delegate"), f"{path}.may_delegate") or {}
        ).items():
            scopes_path = f"{path}.may_delegate.{server_name}"
            scopes = self.unique_list(scopes_node, scopes_path, self.scope)
            # Scopes of servers in the file are checked here, those of other servers against the
            # console when applying. Servers the file gets wrong were reported already.
            if scopes is not None and server_name in servers:
                self.check_scopes(scopes_node, scopes_path, scopes, servers[server_name])
            may_delegate[server_name] = scopes
        if len(self.problems) > start:
            return None
        return GroupSpec(path, name, members, may_delegate)

    def username(self, node: yaml.Node, path: str) -> str | None:
        return self.text(node, path, max_length=150)

    def settings(self, node: yaml.Node | None) -> dict[str, str]:
        fields = self.mapping(node, "settings", tuple(PolicySetting.KEYS)) or {}
        return {
            key: self.choice(value, f"settings.{key}", PolicySetting.KEYS[key])
            for key, value in fields.items()
        }


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
    for group in Group.objects.order_by("name"):
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
