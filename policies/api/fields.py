"""Scopes in the API: ``{"<server name>": ["<tool>:<action>", ...]}``, since a scope means something
only on one MCP server. Unknown servers, unknown scopes and malformed scopes are refused by name."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q
from rest_framework import serializers

from policies.models import McpServer, ToolAction, validate_tool_name


class ScopeMapField(serializers.DictField):
    """A set of ToolActions, written and read as scope lists per server name."""

    child = serializers.ListField(child=serializers.CharField())

    def to_representation(self, value) -> dict[str, list[str]]:
        scopes: dict[str, list[str]] = defaultdict(list)
        for server, tool, action in value.order_by().values_list("tool__server__name", "tool__name", "name"):
            scopes[server].append(f"{tool}:{action}")
        return {server: sorted(names) for server, names in sorted(scopes.items())}

    def to_internal_value(self, data) -> list[ToolAction]:
        wanted: dict[str, list[str]] = super().to_internal_value(data)
        known_servers = set(McpServer.objects.filter(name__in=wanted).values_list("name", flat=True))
        errors: list[str] = []
        asked: list[tuple[str, str]] = []
        for server, scopes in wanted.items():
            if server not in known_servers:
                errors.append(f"Unknown MCP server '{server}'.")
                continue
            for scope in scopes:
                tool, sep, action = scope.partition(":")
                if sep and tool and action:
                    asked.append((server, scope))
                else:
                    errors.append(f"'{scope}' is not a scope: write it as <tool>:<action>.")
        query = Q(pk__in=[])
        for server, scope in asked:
            tool, _, action = scope.partition(":")
            query |= Q(tool__server__name=server, tool__name=tool, name=action)
        found = list(ToolAction.objects.filter(query).select_related("tool__server"))
        present = {(a.tool.server.name, a.scope) for a in found}
        errors += [
            f"Unknown scope '{scope}' on MCP server '{server}'."
            for server, scope in asked
            if (server, scope) not in present
        ]
        if errors:
            raise serializers.ValidationError(errors)
        return found


class ActionNamesField(serializers.ListField):
    """A tool's actions, written and read as a list of names."""

    child = serializers.CharField(max_length=50, validators=[validate_tool_name])

    def to_representation(self, value) -> list[str]:
        return [action.name for action in value.all()]
