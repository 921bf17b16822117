"""
Who may do what: MCP servers and their tools, agents, delegations and the tokens hanging off them.

The DOT models (Agent, Grant, AccessToken, RefreshToken, IDToken) are swapped in here once and
for all: DOT's swappable models cannot change after the first migration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from oauth2_provider.models import (
    AbstractAccessToken,
    AbstractApplication,
    AbstractGrant,
    AbstractIDToken,
    AbstractRefreshToken,
)

from audit.events import record

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
# Tool and action names: what MCP allows in a tool name, and never ":" or a space, which would
# break the "<tool>:<action>" scope-token. The policy file reader checks names with this validator.
TOOL_NAME_CHARACTERS = "letters, digits, _ . and -"
validate_tool_name = RegexValidator(r"^[A-Za-z0-9_.-]+\Z", f"Use {TOOL_NAME_CHARACTERS} only.")


def is_tool_name(name: str, model: type[models.Model]) -> bool:
    """Whether ``name`` is a valid name of a ``model`` (Tool or ToolAction): characters and length."""
    try:
        validate_tool_name(name)
    except ValidationError:
        return False
    return len(name) <= model._meta.get_field("name").max_length


def hash_secret(secret: str) -> str:
    """SHA-256 of a generated secret.

    Server secrets are 256-bit random strings, not passwords, so a fast hash is as strong as a
    slow KDF here and keeps introspection (checked on every MCP request) cheap.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def scopes_of(scope: str) -> set[str]:
    """The set of scope-tokens in a space-separated RFC 6749 scope string."""
    return set(scope.split())


class McpServer(models.Model):
    """A resource server, known by its canonical resource URI (RFC 8707 / RFC 9728)."""

    name = models.SlugField(max_length=100, unique=True)
    resource = models.URLField(
        max_length=500, unique=True, help_text="Canonical resource URI, e.g. https://calendar.example.com/mcp"
    )
    description = models.TextField(blank=True)
    client_id = models.CharField(max_length=64, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    default_scopes = models.TextField(
        blank=True, help_text="Scopes granted when an agent asks for none (space-separated tool:action)."
    )
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    tools_imported = models.DateTimeField(
        null=True, blank=True, help_text="When the tools were last imported from the live server."
    )

    class Meta:
        verbose_name = "MCP server"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules every door shares (admin form, API, register_server): a canonical resource
        URI (RFC 8707: no fragment; https, or http on loopback) and default scopes of its tools."""
        super().clean()
        errors = {}
        parts = urlsplit(self.resource)
        if "#" in self.resource:
            errors["resource"] = "A resource URI must not contain a fragment (RFC 8707)."
        elif parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
            errors["resource"] = "Use https; plain http is allowed for loopback hosts only."
        # A new server has no tools yet: its default scopes come after its tools.
        known = (
            {action.scope for action in ToolAction.objects.filter(tool__server=self)} if self.pk else set()
        )
        unknown = [scope for scope in self.default_scopes.split() if scope not in known]
        if unknown:
            errors["default_scopes"] = (
                f"Unknown scope(s) for this server: {', '.join(unknown)}. "
                "A scope is tool:action of one of this server's tools (import or add the tools first)."
            )
        if errors:
            raise ValidationError(errors)

    def set_new_credentials(self) -> str:
        """Give the server a fresh client id and secret; return the secret (shown once)."""
        self.client_id = "srv_" + secrets.token_urlsafe(18)
        secret = secrets.token_urlsafe(32)
        self.secret_hash = hash_secret(secret)
        return secret

    def check_secret(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))


class Tool(models.Model):
    class Risk(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=100, validators=[validate_tool_name])
    description = models.TextField(blank=True, help_text="Shown to the human on the consent page.")
    risk = models.CharField(max_length=10, choices=Risk.choices, default=Risk.LOW)
    input_schema = models.JSONField(default=dict, blank=True, help_text="The tool's JSON Schema, as listed.")
    last_seen = models.DateTimeField(null=True, blank=True, help_text="Last import that listed this tool.")
    available = models.BooleanField(
        default=True, help_text="Listed by the server at the last import (false: gone from the server)."
    )

    class Meta:
        ordering = ["server", "name"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="unique_tool_per_server")]

    def __str__(self) -> str:
        return f"{self.server.name}/{self.name}"

    def risk_at_least(self, level: str) -> bool:
        return RISK_ORDER[self.risk] >= RISK_ORDER[level]


RISK_ORDER = {Tool.Risk.LOW: 0, Tool.Risk.MEDIUM: 1, Tool.Risk.HIGH: 2}


class ToolAction(models.Model):
    """One action of a tool; its scope is ``<tool>:<action>`` on the tool's server."""

    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="actions")
    name = models.CharField(max_length=50, validators=[validate_tool_name])

    class Meta:
        ordering = ["tool", "name"]
        constraints = [models.UniqueConstraint(fields=["tool", "name"], name="unique_action_per_tool")]

    def __str__(self) -> str:
        return self.scope

    @property
    def scope(self) -> str:
        return f"{self.tool.name}:{self.name}"


class Agent(AbstractApplication):
    """An OAuth client acting for humans: DOT's Application, with a lifecycle."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        SUSPENDED = "suspended"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    # The owner is DOT's own ``user`` field; the team is a free label for filtering and search.
    team = models.CharField(max_length=100, blank=True)
    # An explicit switch rather than "empty means no ceiling": removing the last scope from a
    # ceiling must not silently lift it.
    has_scope_ceiling = models.BooleanField(
        default=False,
        help_text="When on, the agent may only ever get scopes in its scope ceiling (none if it is empty).",
    )
    scope_ceiling = models.ManyToManyField(
        ToolAction,
        blank=True,
        related_name="ceiling_of",
        help_text="The most this agent may ever get, whatever humans and policies allow.",
    )
    access_token_lifetime = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds; empty: the console default."
    )
    refresh_token_lifetime = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds; empty: the console default."
    )

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        verbose_name = "agent"

    def is_usable(self, request) -> bool:
        # Only active agents may authorize or get tokens; DOT then answers invalid_client.
        return self.status == self.Status.ACTIVE and super().is_usable(request)

    def clean_fields(self, exclude=None) -> None:
        # DCR takes client_name from JSON as is; Django would str() a number or a list into a name.
        if not isinstance(self.name, str):
            raise ValidationError({"name": "client_name must be a string."})
        super().clean_fields(exclude)

    def clean(self) -> None:
        super().clean()
        # Plain http is allowed for native apps' loopback redirects only (RFC 8252 §7.3).
        for uri in self.redirect_uris.split():
            parts = urlsplit(uri)
            if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
                raise ValidationError({"redirect_uris": f"{uri}: http is allowed for loopback hosts only."})

    def save(self, *args, **kwargs) -> None:
        if self._state.adding and self.registration_source != self.RegistrationSource.MANUAL:
            # Self-registered agents (DCR, CIMD) start as the registration policy says.
            self.status = PolicySetting.initial_agent_status()
        adding = self._state.adding
        super().save(*args, **kwargs)
        if adding:
            record(
                "agent.registered",
                outcome="allow",
                agent=self,
                detail={"source": self.registration_source, "status": self.status},
            )


class Delegation(models.Model):
    """A human's grant of some scopes on one MCP server to one agent. Tokens never exceed it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        REVOKED = "revoked"
        EXPIRED = "expired"

    # The statuses revocation ends: what an agent holds now or may soon hold.
    LIVE = (Status.APPROVED, Status.PENDING)

    human = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="delegations")
    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="delegations")
    scope = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Who approved or denied it (null: approved at consent, needing no approver).
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided = models.DateTimeField(null=True, blank=True, help_text="When it was approved or denied.")
    decision_comment = models.TextField(
        blank=True, help_text="The approver's comment, or why the request ended; shown to the human."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(
        null=True, blank=True, help_text="Last introspection of one of its tokens."
    )

    class Meta:
        ordering = ["-created"]
        permissions = [("approve_delegation", "Can approve or deny delegations")]
        indexes = [models.Index(fields=["human", "agent", "server", "status"])]
        constraints = [
            # One live delegation per human, agent and server: consenting again updates it.
            models.UniqueConstraint(
                fields=["human", "agent", "server"],
                condition=models.Q(status="approved"),
                name="one_approved_delegation_per_human_agent_server",
            )
        ]

    def __str__(self) -> str:
        return f"{self.human} → {self.agent} on {self.server}"

    @property
    def scopes(self) -> set[str]:
        return scopes_of(self.scope)


class Grant(AbstractGrant):
    """An authorization code. Kept after its exchange, so that a replay revokes what it minted."""

    delegation = models.ForeignKey(Delegation, null=True, blank=True, on_delete=models.CASCADE)
    consumed = models.DateTimeField(null=True, blank=True)
    token_family = models.UUIDField(null=True, blank=True, editable=False)

    class Meta(AbstractGrant.Meta):
        swappable = "OAUTH2_PROVIDER_GRANT_MODEL"


class AccessToken(AbstractAccessToken):
    # Null only for DOT's own registration-management tokens (RFC 7592), which never pass
    # introspection: a token without a delegation is inactive for every MCP server.
    delegation = models.ForeignKey(
        Delegation, null=True, blank=True, on_delete=models.CASCADE, related_name="access_tokens"
    )
    # Token exchange (RFC 8693, ``policies.exchange``): the subject token this one was exchanged
    # from, and the hop policy that allowed it. Deleting either deletes this token, so revoking
    # anything up the chain (or removing the hop) removes every token derived from it.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="derived_tokens"
    )
    exchange_policy = models.ForeignKey(
        "ExchangePolicy", null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )

    class Meta(AbstractAccessToken.Meta):
        swappable = "OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL"


class RefreshToken(AbstractRefreshToken):
    delegation = models.ForeignKey(
        Delegation, null=True, blank=True, on_delete=models.CASCADE, related_name="refresh_tokens"
    )

    class Meta(AbstractRefreshToken.Meta):
        swappable = "OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL"


class IDToken(AbstractIDToken):
    class Meta(AbstractIDToken.Meta):
        swappable = "OAUTH2_PROVIDER_ID_TOKEN_MODEL"


class DelegationPolicy(models.Model):
    """The members of a Django group may delegate these tool actions to these agents (or any agent).

    A group may have several policies, e.g. a general one and a wider one for a trusted agent. A
    scope is delegable when any policy that applies (the human is in its group, the agent is one of
    its agents or it names none) lists it; the strictest of those policies sets whether it needs
    an approver and how long the delegation may live.
    """

    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="delegation_policies")
    name = models.CharField(
        max_length=100, blank=True, help_text="Tells policies of one group apart; empty: the main one."
    )
    agents = models.ManyToManyField(
        Agent, blank=True, related_name="delegation_policies", help_text="Empty: every agent."
    )
    may_delegate = models.ManyToManyField(ToolAction, blank=True, related_name="delegable_by")
    approval_risk = models.CharField(
        max_length=10,
        choices=Tool.Risk.choices,
        blank=True,
        help_text="Scopes of tools at or above this risk need an approver; empty: none by risk.",
    )
    approval_required = models.ManyToManyField(
        ToolAction, blank=True, related_name="approval_required_by", help_text="Scopes that need an approver."
    )
    max_delegation_lifetime = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds a delegation may live from its approval; empty: no limit."
    )

    class Meta:
        verbose_name_plural = "delegation policies"
        ordering = ["group__name", "name"]
        constraints = [models.UniqueConstraint(fields=["group", "name"], name="unique_policy_name_per_group")]

    def __str__(self) -> str:
        return f"policy of {self.group.name}" + (f": {self.name}" if self.name else "")

    @staticmethod
    def scope_errors(
        may_delegate: Iterable[ToolAction], approval_required: Iterable[ToolAction], agents: Iterable[Agent]
    ) -> dict[str, list[str]]:
        """What would make a policy with these many-to-many values inconsistent (field -> messages).

        Many-to-many values are not there yet when ``clean()`` runs, so the admin form and the API
        serializer call this with the values about to be saved.
        """
        may_delegate = set(may_delegate)
        errors: dict[str, list[str]] = {}
        unlisted = sorted(f"{a.tool.server.name}: {a.scope}" for a in set(approval_required) - may_delegate)
        if unlisted:
            errors["approval_required"] = [f"Not in may_delegate, so never asked for: {', '.join(unlisted)}."]
        above = sorted(
            f"{action.tool.server.name}: {action.scope} (agent {agent.client_id})"
            for agent in agents
            if agent.has_scope_ceiling
            for action in may_delegate - set(agent.scope_ceiling.all())
        )
        if above:
            errors["may_delegate"] = [f"Above the agent's scope ceiling: {', '.join(above)}."]
        return errors


class ExchangePolicy(models.Model):
    """A hop of token exchange (RFC 8693): ``source`` may exchange a token bound to itself for a
    token bound to ``target``, with at most ``scopes`` of the target's tool actions.

    It plays the part of RFC 8693's ``may_act``: which MCP server may act, for the same human and
    agent, at which other server. The new token never exceeds it, nor the human's own delegation
    to the agent on the target; no hop policy, no exchange.
    """

    source = models.ForeignKey(
        McpServer,
        on_delete=models.CASCADE,
        related_name="exchange_policies_out",
        help_text="The MCP server that presents a token bound to itself.",
    )
    target = models.ForeignKey(
        McpServer,
        on_delete=models.CASCADE,
        related_name="exchange_policies_in",
        help_text="The MCP server the new token is bound to.",
    )
    scopes = models.ManyToManyField(
        ToolAction,
        blank=True,
        related_name="exchangeable_by",
        help_text="The most a token exchanged along this hop may carry (the target's tool actions).",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "exchange policy"
        verbose_name_plural = "exchange policies"
        ordering = ["source__name", "target__name"]
        constraints = [
            models.UniqueConstraint(fields=["source", "target"], name="one_exchange_policy_per_hop"),
            models.CheckConstraint(
                condition=~models.Q(source=models.F("target")), name="exchange_policy_between_two_servers"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} → {self.target}"

    def clean(self) -> None:
        super().clean()
        if self.source_id is not None and self.source_id == self.target_id:
            raise ValidationError({"target": "A hop goes from one MCP server to another."})

    @staticmethod
    def scope_errors(target: McpServer | None, scopes: Iterable[ToolAction]) -> dict[str, list[str]]:
        """Scopes that are not the target's (many-to-many values are checked before saving, as
        ``DelegationPolicy.scope_errors`` does)."""
        foreign = sorted(
            f"{a.tool.server.name}: {a.scope}" for a in scopes if target and a.tool.server_id != target.pk
        )
        return {"scopes": [f"Not tools of the target server: {', '.join(foreign)}."]} if foreign else {}

    @property
    def scope_set(self) -> set[str]:
        return {action.scope for action in self.scopes.select_related("tool")}


class PolicySetting(models.Model):
    """Console-wide policy settings that policy files set (one row per key)."""

    AGENT_REGISTRATION = "agent_registration"
    KEYS = {AGENT_REGISTRATION: ("auto_approve", "require_approval")}

    key = models.CharField(max_length=50, unique=True)
    value = models.CharField(max_length=200)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    def clean(self) -> None:
        super().clean()
        if self.key not in self.KEYS:
            raise ValidationError({"key": f"Unknown setting; known: {', '.join(self.KEYS)}."})
        if self.value not in self.KEYS[self.key]:
            raise ValidationError({"value": f"Use one of: {', '.join(self.KEYS[self.key])}."})

    @classmethod
    def agent_registration(cls) -> str:
        row = cls.objects.filter(key=cls.AGENT_REGISTRATION).first()
        return row.value if row else settings.AGENT_REGISTRATION_DEFAULT

    @classmethod
    def initial_agent_status(cls) -> str:
        """Status of an agent that registered itself (DCR or CIMD), as the policy says."""
        if cls.agent_registration() == "require_approval":
            return Agent.Status.PENDING
        return Agent.Status.ACTIVE
