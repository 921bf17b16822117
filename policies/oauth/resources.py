"""RFC 8707 resource indicators: every token is bound to exactly one registered, active MCP server."""

from __future__ import annotations

from oauthlib.common import Request as OAuthlibRequest

from policies.models import McpServer


def requested_resources(request: OAuthlibRequest) -> list[str]:
    """Every ``resource`` value of an oauthlib request (the parameter may repeat)."""
    resource = getattr(request, "resource", None)
    if isinstance(resource, list):
        return resource
    params = list(request.uri_query_params or []) + list(request.decoded_body or [])
    return [value for key, value in params if key == "resource"]


def server_for_resource(resources: list[str]) -> McpServer | None:
    """The active MCP server named by exactly one resource indicator, or None."""
    if len(resources) != 1:
        return None
    return McpServer.objects.filter(resource=resources[0], active=True).first()


def target_error_description(resources: list[str]) -> str:
    if not resources:
        return "A resource parameter naming the MCP server is required (RFC 8707)."
    if len(resources) > 1:
        return "Exactly one resource is allowed: a token is bound to one MCP server."
    return f"The resource '{resources[0]}' is not a registered, active MCP server."
