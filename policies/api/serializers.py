"""Shapes of the management API. Serializers check shape and names and say what is wrong, field by
field; what may happen is decided in policies.services and policies.decisions."""

from __future__ import annotations

import copy
from typing import NoReturn

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from console.roles import is_role_group
from policies.api.fields import ActionNamesField, ScopeMapField
from policies.introspection import introspection_changed
from policies.models import (
    AccessToken,
    Agent,
    Delegation,
    DelegationPolicy,
    ExchangePolicy,
    McpServer,
    PolicySetting,
    RefreshToken,
    Tool,
    ToolAction,
)

User = get_user_model()


def raise_model_errors(error: DjangoValidationError) -> NoReturn:
    """Re-raise a model's clean() error as DRF's, keeping its per-field messages."""
    raise serializers.ValidationError(error.message_dict if hasattr(error, "error_dict") else error.messages)


class ModelRules:
    """Runs the model's clean() on the object as it would be saved: the API shares the admin's rules."""

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        model = self.Meta.model
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        columns = {f.name for f in model._meta.concrete_fields}
        for name, value in attrs.items():
            if name in columns:
                setattr(candidate, name, value)
        try:
            candidate.clean()
        except DjangoValidationError as error:
            raise_model_errors(error)
        return attrs


# --- MCP servers and tools ----------------------------------------------------------------------


class ServerSerializer(ModelRules, serializers.ModelSerializer):
    tools = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = McpServer
        fields = [
            "name",
            "resource",
            "description",
            "default_scopes",
            "active",
            "client_id",
            "created",
            "tools_imported",
            "tools",
        ]
        read_only_fields = ["client_id", "created", "tools_imported"]


class CredentialsSerializer(serializers.Serializer):
    """Introspection credentials of an MCP server: the secret is shown this once; only its hash is kept."""

    client_id = serializers.CharField()
    client_secret = serializers.CharField()


class ServerCreatedSerializer(ServerSerializer):
    client_secret = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(ServerSerializer.Meta):
        fields = [*ServerSerializer.Meta.fields, "client_secret"]


class ImportToolsSerializer(serializers.Serializer):
    token = serializers.CharField(
        required=False,
        allow_blank=False,
        write_only=True,
        help_text="A bearer token for the MCP server, when its tools/list needs one.",
    )


class ImportResultSerializer(serializers.Serializer):
    added = serializers.ListField(child=serializers.CharField())
    removed = serializers.ListField(child=serializers.CharField())
    changed = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    skipped = serializers.DictField(
        child=serializers.CharField(), help_text="Tool name: why it was not imported."
    )


class ToolSerializer(serializers.ModelSerializer):
    server = serializers.SlugRelatedField(slug_field="name", queryset=McpServer.objects.all())
    actions = ActionNamesField(help_text="Action names; each is the scope <tool>:<action>.")

    class Meta:
        model = Tool
        fields = [
            "id",
            "server",
            "name",
            "description",
            "risk",
            "actions",
            "input_schema",
            "available",
            "last_seen",
        ]
        read_only_fields = ["input_schema", "available", "last_seen"]

    def validate_actions(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each action may appear once.")
        return value

    def create(self, validated_data: dict) -> Tool:
        actions = validated_data.pop("actions")
        tool = Tool.objects.create(**validated_data)
        ToolAction.objects.bulk_create([ToolAction(tool=tool, name=name) for name in actions])
        introspection_changed()  # bulk_create sends no signal
        return tool

    def update(self, instance: Tool, validated_data: dict) -> Tool:
        actions = validated_data.pop("actions", None)
        tool = super().update(instance, validated_data)
        if actions is not None:
            tool.actions.exclude(name__in=actions).delete()
            existing = set(tool.actions.values_list("name", flat=True))
            ToolAction.objects.bulk_create(
                [ToolAction(tool=tool, name=n) for n in actions if n not in existing]
            )
            introspection_changed()  # bulk_create sends no signal
        return tool


# --- Agents and policies ------------------------------------------------------------------------


class AgentSerializer(ModelRules, serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(
        source="user",
        slug_field="username",
        queryset=User.objects.all(),
        allow_null=True,
        required=False,
        help_text="Username of the person responsible for the agent.",
    )
    # Agents take the authorization-code flow only: the console issues no other grant.
    authorization_grant_type = serializers.ChoiceField(
        choices=[Agent.GRANT_AUTHORIZATION_CODE], default=Agent.GRANT_AUTHORIZATION_CODE
    )
    scope_ceiling = ScopeMapField(
        required=False,
        help_text="The most the agent may ever get, per server; applies when has_scope_ceiling.",
    )

    class Meta:
        model = Agent
        fields = [
            "id",
            "client_id",
            "name",
            "client_type",
            "authorization_grant_type",
            "redirect_uris",
            "status",
            "registration_source",
            "owner",
            "team",
            "has_scope_ceiling",
            "scope_ceiling",
            "access_token_lifetime",
            "refresh_token_lifetime",
            "created",
            "updated",
        ]
        read_only_fields = ["client_id", "status", "registration_source", "created", "updated"]
        extra_kwargs = {
            "name": {"required": True, "allow_blank": False},
            "access_token_lifetime": {"min_value": 1},
            "refresh_token_lifetime": {"min_value": 1},
        }


class AgentCreatedSerializer(AgentSerializer):
    client_secret = serializers.CharField(
        read_only=True, allow_null=True, help_text="Confidential agents only; shown once."
    )

    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "client_secret"]


class PolicySerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all())
    agents = serializers.SlugRelatedField(
        slug_field="client_id",
        many=True,
        queryset=Agent.objects.all(),
        required=False,
        help_text="Agents (client_id) this policy applies to; empty: every agent.",
    )
    may_delegate = ScopeMapField(help_text="Scopes the group's members may delegate, per server.")
    approval_required = ScopeMapField(required=False, help_text="Scopes that need an approver, per server.")

    class Meta:
        model = DelegationPolicy
        fields = [
            "id",
            "group",
            "name",
            "agents",
            "may_delegate",
            "approval_risk",
            "approval_required",
            "max_delegation_lifetime",
        ]
        extra_kwargs = {"max_delegation_lifetime": {"min_value": 1}}

    def validate(self, attrs: dict) -> dict:
        errors = DelegationPolicy.scope_errors(
            self._current(attrs, "may_delegate"),
            self._current(attrs, "approval_required"),
            self._current(attrs, "agents"),
        )
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def _current(self, attrs: dict, name: str) -> list:
        """The many-to-many value as it will be: the one sent, else the one stored (PATCH)."""
        if name in attrs:
            return list(attrs[name])
        return list(getattr(self.instance, name).all()) if self.instance is not None else []


class ExchangePolicySerializer(ModelRules, serializers.ModelSerializer):
    source = serializers.SlugRelatedField(
        slug_field="name", queryset=McpServer.objects.all(), help_text="The MCP server that exchanges."
    )
    target = serializers.SlugRelatedField(
        slug_field="name", queryset=McpServer.objects.all(), help_text="The MCP server the new token is for."
    )
    scopes = ScopeMapField(help_text="The most an exchanged token may carry: the target's scopes.")

    class Meta:
        model = ExchangePolicy
        fields = ["id", "source", "target", "scopes"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        target = attrs.get("target", getattr(self.instance, "target", None))
        scopes = attrs["scopes"] if "scopes" in attrs else list(self.instance.scopes.all())
        errors = ExchangePolicy.scope_errors(target, scopes)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class PolicySettingSerializer(ModelRules, serializers.ModelSerializer):
    key = serializers.ChoiceField(choices=list(PolicySetting.KEYS))

    class Meta:
        model = PolicySetting
        fields = ["key", "value"]


class GroupSerializer(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(
        source="user_set", slug_field="username", many=True, queryset=User.objects.all(), required=False
    )

    class Meta:
        model = Group
        fields = ["id", "name", "members"]

    def validate_name(self, name: str) -> str:
        if self.instance is not None and is_role_group(self.instance) and name != self.instance.name:
            raise serializers.ValidationError("A console role's group keeps its name.")
        return name


# --- Delegations, tokens, humans ----------------------------------------------------------------


class DelegationSerializer(serializers.ModelSerializer):
    human = serializers.SlugRelatedField(slug_field="username", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="client_id", read_only=True)
    agent_name = serializers.CharField(source="agent.name", read_only=True)
    server = serializers.SlugRelatedField(slug_field="name", read_only=True)
    scopes = serializers.SerializerMethodField()
    # Null when the delegation was approved at consent, needing no approver.
    approved_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Delegation
        fields = [
            "id",
            "human",
            "agent",
            "agent_name",
            "server",
            "scopes",
            "status",
            "approved_by",
            "decided",
            "decision_comment",
            "created",
            "updated",
            "expires",
            "revoked",
            "last_used",
        ]
        read_only_fields = fields

    def get_scopes(self, delegation: Delegation) -> list[str]:
        return sorted(delegation.scopes)


class ApproveSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class DenySerializer(serializers.Serializer):
    comment = serializers.CharField(
        allow_blank=False, max_length=2000, help_text="Why it was denied; the human sees it."
    )


class TokenSerializer(serializers.ModelSerializer):
    """Token metadata only: never the token nor its checksum."""

    human = serializers.SlugRelatedField(source="user", slug_field="username", read_only=True)
    agent = serializers.SlugRelatedField(source="application", slug_field="client_id", read_only=True)
    server = serializers.CharField(source="delegation.server.name", read_only=True, allow_null=True)

    class Meta:
        model = AccessToken
        fields = ["id", "human", "agent", "server", "delegation", "scope", "expires", "created"]
        read_only_fields = fields


class RefreshTokenSerializer(TokenSerializer):
    class Meta:
        model = RefreshToken
        fields = ["id", "human", "agent", "server", "delegation", "created", "revoked"]
        read_only_fields = fields


class HumanSerializer(serializers.ModelSerializer):
    live_delegations = serializers.IntegerField(read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "is_active", "live_delegations"]
        read_only_fields = fields


class RevokedSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="How many delegations (or tokens) were revoked.")
