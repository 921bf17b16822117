"""What a policy file says once read (PolicyDocument and its specs), and what applying it did
(ApplyResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Kinds of change an apply reports, with the word used for one item in the text report.
KINDS = {
    "servers": "server",
    "tools": "tool",
    "agents": "agent",
    "actions": "action",
    "groups": "group",
    "memberships": "member",
    "delegable_scopes": "delegable scope",
    "policies": "policy",
    "exchange_policies": "exchange policy",
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
class AgentSpec:
    """An agent, known by its client_id; the file sets every field below (absent keys: defaults)."""

    path: str
    client_id: str
    name: str
    client_type: str
    redirect_uris: tuple[str, ...]
    status: str
    team: str
    owner: str | None  # username
    has_scope_ceiling: bool
    scope_ceiling: dict[str, tuple[str, ...]]  # server name -> scopes
    access_token_lifetime: int | None  # seconds; None: the console default
    refresh_token_lifetime: int | None


@dataclass(frozen=True)
class PolicySpec:
    """One delegation policy of a group: the group's main one (name "", every agent) or a named one."""

    path: str
    name: str
    agents: tuple[str, ...]  # client ids; empty: every agent
    may_delegate: dict[str, tuple[str, ...]]  # server name -> scopes
    approval_risk: str  # "" or a tool risk: scopes of tools at or above it need an approver
    approval_required: dict[str, tuple[str, ...]]  # server name -> scopes that need an approver
    max_delegation_lifetime: int | None  # seconds


@dataclass(frozen=True)
class GroupSpec:
    path: str
    name: str
    members: tuple[str, ...]
    policies: tuple[PolicySpec, ...]  # the main policy first, then the agent policies

    @property
    def may_delegate(self) -> dict[str, tuple[str, ...]]:
        return self.policies[0].may_delegate


@dataclass(frozen=True)
class ExchangeSpec:
    """A token exchange hop (RFC 8693): ``source`` may exchange for ``target``, with at most
    ``scopes`` (the target's)."""

    path: str
    source: str  # server names
    target: str
    scopes: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass
class PolicyDocument:
    source: str
    servers: list[ServerSpec]
    agents: list[AgentSpec]
    groups: list[GroupSpec]
    settings: dict[str, str]
    lines: dict[str, int]  # key path -> line, for problems found later against the console
    exchange_policies: list[ExchangeSpec] = field(default_factory=list)

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
    # client_id -> client_secret of confidential agents created (or made confidential) by this apply.
    agent_secrets: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, verb: str, item: str) -> None:
        self.changes[kind][verb].append(item)

    @property
    def changed(self) -> bool:
        return any(items for verbs in self.changes.values() for items in verbs.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary; ``servers`` maps each server created to its client_id and client_secret,
        ``agents`` each confidential agent given a secret to its client_secret."""
        return {
            "dry_run": self.dry_run,
            "changed": self.changed,
            "changes": self.changes,
            "servers": self.credentials,
            "agents": {
                client_id: {"client_secret": secret} for client_id, secret in self.agent_secrets.items()
            },
        }

    def change_lines(self) -> list[str]:
        """One line per change, e.g. ``+ server calendar`` or ``- action calendar/x:write``."""
        return [
            f"{VERBS[verb]} {word} {item}"
            for kind, word in KINDS.items()
            for verb in VERBS
            for item in self.changes[kind][verb]
        ]
