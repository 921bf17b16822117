"""DOT scopes backend: scopes are the ``<tool>:<action>`` pairs of the registered MCP servers."""

from __future__ import annotations

from oauth2_provider.scopes import BaseScopes

from policies.models import McpServer, ToolAction
from policies.oauth.resources import requested_resources, server_for_resource


def scope_descriptions(server: McpServer | None = None) -> dict[str, str]:
    actions = ToolAction.objects.filter(tool__server__active=True).select_related("tool")
    if server is not None:
        actions = actions.filter(tool__server=server)
    return {action.scope: f"{action.tool.name} — {action.name}" for action in actions}


def default_scopes(server: McpServer) -> list[str]:
    """What a request naming no scope gets at ``server``: its default scopes, else all of its scopes."""
    return server.default_scopes.split() or list(scope_descriptions(server))


class ToolScopes(BaseScopes):
    def get_all_scopes(self) -> dict[str, str]:
        return scope_descriptions()

    def get_available_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        server = server_for_resource(requested_resources(request)) if request is not None else None
        return list(scope_descriptions(server))

    def get_default_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        """A request naming no scope gets the server's default scopes, or all of its scopes."""
        server = server_for_resource(requested_resources(request)) if request is not None else None
        return default_scopes(server) if server is not None else []
