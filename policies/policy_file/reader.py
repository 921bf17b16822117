"""Reading a policy file: YAML or JSON text to a PolicyDocument, checking everything the document
alone can tell and naming each problem by its line and key path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.core.validators import validate_slug

from console.roles import Role
from policies.models import (
    LOOPBACK_HOSTS,
    TOOL_NAME_CHARACTERS,
    Agent,
    McpServer,
    PolicySetting,
    Tool,
    validate_tool_name,
)
from policies.policy_file.document import (
    AgentSpec,
    ExchangeSpec,
    GroupSpec,
    PolicyDocument,
    PolicyError,
    PolicySpec,
    ServerSpec,
    ToolSpec,
)

RISKS = tuple(Tool.Risk.values)


@dataclass(frozen=True)
class Name:
    pattern: re.Pattern
    allowed: str


# Names are checked with the validators of the model fields that store them.
SERVER_NAME = Name(validate_slug.regex, "letters, digits, - and _")  # McpServer.name is a SlugField
TOOL_NAME = Name(validate_tool_name.regex, TOOL_NAME_CHARACTERS)

SERVER_KEYS = ("name", "resource", "description", "default_scopes", "active", "tools")
TOOL_KEYS = ("name", "actions", "risk", "description")
POLICY_KEYS = ("may_delegate", "approval_risk", "approval_required", "max_delegation_lifetime")
GROUP_KEYS = ("name", "members", *POLICY_KEYS, "agent_policies")
GROUP_REQUIRED = ("name", "members", "may_delegate")
AGENT_POLICY_KEYS = ("name", "agents", *POLICY_KEYS)
AGENT_POLICY_REQUIRED = ("name", "agents", "may_delegate")
EXCHANGE_KEYS = ("source", "target", "scopes")
AGENT_KEYS = (
    "client_id",
    "name",
    "client_type",
    "redirect_uris",
    "status",
    "team",
    "owner",
    "has_scope_ceiling",
    "scope_ceiling",
    "access_token_lifetime",
    "refresh_token_lifetime",
)
# Explicit, so that listing an agent never quietly approves it or changes how it authenticates.
AGENT_REQUIRED = ("client_id", "client_type", "redirect_uris", "status")
CLIENT_TYPES = (Agent.CLIENT_PUBLIC, Agent.CLIENT_CONFIDENTIAL)
AGENT_STATUSES = tuple(Agent.Status.values)
ROLE_NAMES = {role.value for role in Role}
MAX_SECONDS = 2**31 - 1  # what a PositiveIntegerField holds on every database


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
        if unstorable := _unstorable_lines(root):
            raise PolicyError(
                [f"line {line}: a NUL character or a lone surrogate cannot be stored" for line in unstorable]
            )
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


def _unstorable_lines(root: yaml.Node) -> list[int]:
    """Lines of scalars PostgreSQL cannot store: a NUL or a lone surrogate (YAML and JSON escapes
    can write both). JSON writes a character beyond the BMP as a pair of \\u escapes, which YAML
    reads as two surrogates: such pairs are joined into the character here."""
    lines: set[int] = set()
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:  # an alias names a node again
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                node.value = node.value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            except UnicodeDecodeError:
                lines.add(node.start_mark.line + 1)
            if "\x00" in node.value:
                lines.add(node.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(item for pair in node.value for item in pair)
    return sorted(lines)


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
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return "must use https (plain http is allowed for loopback hosts only)"
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

    def boolean(self, node: yaml.Node | None, path: str, default: bool = True) -> bool | None:
        if node is None:
            return default
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
        top = self.mapping(root, "", ("servers", "agents", "groups", "exchange_policies", "settings"))
        if top is None:
            return None
        servers = self.servers(top.get("servers"))
        agents = self.agents(top.get("agents"), servers)
        groups = self.groups(top.get("groups"), servers)
        exchange_policies = self.exchange_policies(top.get("exchange_policies"), servers)
        settings = self.settings(top.get("settings"))
        if self.problems:
            return None
        return PolicyDocument(source, servers, agents, groups, settings, self.lines, exchange_policies)

    def exchange_policies(self, node: yaml.Node | None, servers: list[ServerSpec]) -> list[ExchangeSpec]:
        """Token exchange hops; scopes of a target in the file are checked here, others when applying."""
        in_file = {spec.name: spec for spec in servers}
        specs: dict[tuple[str, str], ExchangeSpec] = {}
        for index, item in enumerate(self.sequence(node, "exchange_policies") or []):
            path = f"exchange_policies[{index}]"
            start = len(self.problems)
            fields = self.mapping(item, path, EXCHANGE_KEYS, required=EXCHANGE_KEYS) or {}
            source = self.text(fields.get("source"), f"{path}.source", SERVER_NAME, max_length=100)
            target = self.text(fields.get("target"), f"{path}.target", SERVER_NAME, max_length=100)
            scopes = self.unique_list(fields.get("scopes"), f"{path}.scopes", self.scope)
            if source is not None and source == target:
                self.fail(fields["target"], f"{path}.target", "a hop goes from one MCP server to another")
            if scopes is not None and target in in_file:
                self.check_scopes(fields["scopes"], f"{path}.scopes", scopes, in_file[target])
            if len(self.problems) > start:
                continue
            if (source, target) in specs:
                self.fail(item, path, f"the hop {source} -> {target} is already listed")
            else:
                specs[(source, target)] = ExchangeSpec(path, source, target, scopes)
        return list(specs.values())

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

    def agents(self, node: yaml.Node | None, servers: list[ServerSpec]) -> list[AgentSpec]:
        in_file = {spec.name: spec for spec in servers}
        specs: dict[str, AgentSpec] = {}
        for index, item in enumerate(self.sequence(node, "agents") or []):
            spec = self.agent(item, f"agents[{index}]", in_file)
            if spec is None:
                continue
            if spec.client_id in specs:
                self.fail_at(
                    f"{spec.path}.client_id",
                    f"agent '{spec.client_id}' is already defined at {specs[spec.client_id].path}",
                )
            else:
                specs[spec.client_id] = spec
        return list(specs.values())

    def agent(self, node: yaml.Node, path: str, servers: dict[str, ServerSpec]) -> AgentSpec | None:
        start = len(self.problems)
        fields = self.mapping(node, path, AGENT_KEYS, required=AGENT_REQUIRED) or {}
        client_id = self.client_id(fields.get("client_id"), f"{path}.client_id")
        name = self.description(fields.get("name"), f"{path}.name")
        if name is not None and len(name) > 255:
            self.fail(fields["name"], f"{path}.name", "is too long (at most 255 characters)")
        client_type = self.choice(fields.get("client_type"), f"{path}.client_type", CLIENT_TYPES)
        redirect_uris = self.unique_list(fields.get("redirect_uris"), f"{path}.redirect_uris", self.uri)
        status = self.choice(fields.get("status"), f"{path}.status", AGENT_STATUSES)
        team = self.description(fields.get("team"), f"{path}.team")
        if team is not None and len(team) > 100:
            self.fail(fields["team"], f"{path}.team", "is too long (at most 100 characters)")
        owner_node = fields.get("owner")
        owner = (
            None if owner_node is None or _is_null(owner_node) else self.username(owner_node, f"{path}.owner")
        )
        has_ceiling = self.boolean(
            fields.get("has_scope_ceiling"), f"{path}.has_scope_ceiling", default=False
        )
        ceiling = self.scope_map(fields.get("scope_ceiling"), f"{path}.scope_ceiling", servers)
        access = self.seconds(fields.get("access_token_lifetime"), f"{path}.access_token_lifetime")
        refresh = self.seconds(fields.get("refresh_token_lifetime"), f"{path}.refresh_token_lifetime")
        if len(self.problems) > start:
            return None
        return AgentSpec(
            path,
            client_id,
            name,
            client_type,
            redirect_uris,
            status,
            team,
            owner,
            has_ceiling,
            ceiling,
            access,
            refresh,
        )

    def uri(self, node: yaml.Node, path: str) -> str | None:
        value = self.text(node, path, max_length=1000)
        if value is not None and any(character.isspace() for character in value):
            self.fail(node, path, "must not contain spaces")
            return None
        return value

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
        fields = self.mapping(node, path, GROUP_KEYS, required=GROUP_REQUIRED) or {}
        name = self.text(fields.get("name"), f"{path}.name", max_length=150)
        if name in ROLE_NAMES:
            # Role groups carry console permissions; a policy file must not hand them out.
            self.fail(fields["name"], f"{path}.name", f"'{name}' is a console role, not a policy group")
        members = self.unique_list(fields.get("members"), f"{path}.members", self.username)
        main = self.policy_terms(fields, path, "", (), servers)
        policies = [main]
        names: set[str] = set()
        for index, item in enumerate(
            self.sequence(fields.get("agent_policies"), f"{path}.agent_policies") or []
        ):
            policy_path = f"{path}.agent_policies[{index}]"
            policy_fields = (
                self.mapping(item, policy_path, AGENT_POLICY_KEYS, required=AGENT_POLICY_REQUIRED) or {}
            )
            policy_name = self.text(policy_fields.get("name"), f"{policy_path}.name", max_length=100)
            if policy_name in names:
                self.fail(
                    policy_fields["name"], f"{policy_path}.name", f"policy '{policy_name}' is listed twice"
                )
            names.add(policy_name)
            agents = self.unique_list(policy_fields.get("agents"), f"{policy_path}.agents", self.client_id)
            policies.append(self.policy_terms(policy_fields, policy_path, policy_name, agents or (), servers))
        if len(self.problems) > start:
            return None
        return GroupSpec(path, name, members, tuple(policies))

    def policy_terms(
        self,
        fields: dict[str, yaml.Node],
        path: str,
        name: str | None,
        agents: tuple[str, ...],
        servers: dict[str, ServerSpec],
    ) -> PolicySpec | None:
        may_delegate = self.scope_map(fields.get("may_delegate"), f"{path}.may_delegate", servers)
        approval = self.scope_map(fields.get("approval_required"), f"{path}.approval_required", servers)
        for server_name, scopes in approval.items():
            for index, scope in enumerate(scopes or ()):
                if scope not in (may_delegate.get(server_name) or ()):
                    self.fail_at(
                        f"{path}.approval_required.{server_name}[{index}]",
                        f"'{scope}' is not in this policy's may_delegate",
                    )
        risk = self.choice(fields.get("approval_risk"), f"{path}.approval_risk", RISKS) or ""
        lifetime = self.seconds(fields.get("max_delegation_lifetime"), f"{path}.max_delegation_lifetime")
        return PolicySpec(path, name, agents, may_delegate, risk, approval, lifetime)

    def scope_map(
        self, node: yaml.Node | None, path: str, servers: dict[str, ServerSpec]
    ) -> dict[str, tuple[str, ...]]:
        """{server name: [scopes]}; scopes of servers in the file are checked here, those of other
        servers against the console when applying. Servers the file gets wrong were reported already."""
        result: dict[str, tuple[str, ...]] = {}
        for server_name, (_, scopes_node) in (self.entries(node, path) or {}).items():
            scopes_path = f"{path}.{server_name}"
            scopes = self.unique_list(scopes_node, scopes_path, self.scope)
            if scopes is not None and server_name in servers:
                self.check_scopes(scopes_node, scopes_path, scopes, servers[server_name])
            result[server_name] = scopes
        return result

    def seconds(self, node: yaml.Node | None, path: str) -> int | None:
        if node is None or _is_null(node):
            return None
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SECONDS:
            self.fail(node, path, f"must be a whole number of seconds from 1 to {MAX_SECONDS}")
            return None
        return value

    def client_id(self, node: yaml.Node | None, path: str) -> str | None:
        return self.text(node, path, max_length=Agent._meta.get_field("client_id").max_length)

    def username(self, node: yaml.Node, path: str) -> str | None:
        return self.text(node, path, max_length=150)

    def settings(self, node: yaml.Node | None) -> dict[str, str]:
        fields = self.mapping(node, "settings", tuple(PolicySetting.KEYS)) or {}
        return {
            key: self.choice(value, f"settings.{key}", PolicySetting.KEYS[key])
            for key, value in fields.items()
        }
