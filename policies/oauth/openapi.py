"""The OAuth endpoints in the console's OpenAPI schema.

They are plain Django views (DOT's and ours), which drf-spectacular does not see, so this
postprocessing hook describes them by hand: form or JSON bodies as the RFCs define them, and every
error in the RFC 6749 §5.2 shape. Clients read them in /api/docs/, and the fuzz suite
(tests/fuzz/) sends what the schema allows to each of them.
"""

from __future__ import annotations

from typing import Any

from oauth2_provider.settings import oauth2_settings

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
OAUTH_TAG = "oauth"


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _json(schema_name: str, description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


NO_STORE = {
    "Cache-Control": {"description": "Always no-store.", "schema": {"type": "string", "enum": ["no-store"]}}
}


def _error(description: str, **headers: Any) -> dict[str, Any]:
    return _json("OAuthError", description, headers or None)


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {FORM: {"schema": {"type": "object", "properties": properties, "required": required}}},
    }


SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "type": "object",
        "description": "An OAuth error (RFC 6749 §5.2).",
        "properties": {
            "error": _string("The error code, e.g. invalid_request, invalid_grant, invalid_client."),
            "error_description": _string("What went wrong, for the developer."),
        },
        "required": ["error"],
    },
    "OAuthTokens": {
        "type": "object",
        "description": "An access token bound to one MCP server, and its refresh token (RFC 6749 §5.1).",
        "properties": {
            "access_token": _string("The bearer token."),
            "token_type": _string("Always Bearer."),
            "expires_in": {"type": "integer"},
            "scope": _string("The granted scopes, <tool>:<action> separated by spaces."),
            "refresh_token": _string("Rotating: a refresh token works once."),
        },
        "required": ["access_token", "token_type", "expires_in"],
    },
    "Introspection": {
        "type": "object",
        "description": (
            'RFC 7662 §2.2. A token this server may not see is {"active": false} and nothing more. '
            "With tool and action, `decision` says whether that call is allowed."
        ),
        "properties": {
            "active": {"type": "boolean"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "sub": {"type": "string"},
            "username": {"type": "string"},
            "aud": {"type": "string"},
            "iss": {"type": "string"},
            "exp": {"type": "integer"},
            "iat": {"type": "integer"},
            "token_type": {"type": "string"},
            "act": {"type": "object", "nullable": True, "additionalProperties": True},
            "decision": {
                "type": "object",
                "properties": {
                    "tool": {"type": "string"},
                    "action": {"type": "string"},
                    "allowed": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
                "required": ["tool", "action", "allowed", "reason"],
            },
        },
        "required": ["active"],
    },
    "ClientMetadata": {
        "type": "object",
        "description": "RFC 7591 §2 client metadata (the fields this console reads; others are ignored).",
        "properties": {
            "redirect_uris": {"type": "array", "items": {"type": "string"}},
            "client_name": {"type": "string"},
            "grant_types": {"type": "array", "items": {"type": "string"}},
            "response_types": {"type": "array", "items": {"type": "string"}},
            "token_endpoint_auth_method": {"type": "string"},
            "client_uri": {"type": "string"},
            "logo_uri": {"type": "string"},
            "scope": {"type": "string"},
            "contacts": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ClientInformation": {
        "type": "object",
        "description": "RFC 7591 §3.2.1: the registered agent, with its registration access token.",
        "properties": {
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "registration_access_token": {"type": "string"},
            "registration_client_uri": {"type": "string"},
        },
        "required": ["client_id"],
        "additionalProperties": True,
    },
    "ServerMetadata": {
        "type": "object",
        "description": "RFC 8414 authorization server metadata.",
        "properties": {
            "issuer": {"type": "string"},
            "authorization_endpoint": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "registration_endpoint": {"type": "string"},
            "revocation_endpoint": {"type": "string"},
            "introspection_endpoint": {"type": "string"},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
            "code_challenge_methods_supported": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["issuer", "authorization_endpoint", "token_endpoint"],
        "additionalProperties": True,
    },
}


def _paths() -> dict[str, Any]:
    grant_types = list(oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED)
    agent_credentials = {
        "client_id": _string("The agent's client id (a public agent authenticates with nothing else)."),
        "client_secret": _string("A confidential agent's secret (or use HTTP Basic)."),
    }
    bad_request = _error("Malformed or refused request (invalid_request, invalid_grant, ...).", **NO_STORE)
    bad_client = _error("The client failed to authenticate (invalid_client).")
    return {
        "/.well-known/oauth-authorization-server": {
            "get": {
                "operationId": "oauth_server_metadata",
                "summary": "Authorization server metadata (RFC 8414), for MCP clients' discovery.",
                "tags": [OAUTH_TAG],
                "security": [{}],
                "responses": {"200": _json("ServerMetadata", "The metadata document.")},
            }
        },
        "/oauth/token/": {
            "post": {
                "operationId": "oauth_token",
                "summary": "The token endpoint (RFC 6749 §3.2): a code or refresh token for tokens.",
                "description": (
                    "authorization_code needs the PKCE code_verifier and the redirect_uri; "
                    "refresh_token rotates, and a replayed refresh token revokes its family. "
                    "`resource` (RFC 8707) names the MCP server the token is for."
                ),
                "tags": [OAUTH_TAG],
                "security": [{}],
                "requestBody": _form(
                    {
                        "grant_type": _string("One of the supported grants.", enum=grant_types),
                        "code": _string("The authorization code."),
                        "redirect_uri": _string("As sent to the authorization endpoint."),
                        "code_verifier": _string("PKCE (S256)."),
                        "refresh_token": _string("The refresh token to rotate."),
                        "resource": _string("The MCP server's canonical URI."),
                        "scope": _string("At refresh: a subset of the granted scopes."),
                        **agent_credentials,
                    },
                    ["grant_type"],
                ),
                "responses": {
                    "200": _json("OAuthTokens", "Tokens.", NO_STORE),
                    "400": bad_request,
                    "401": bad_client,
                },
            }
        },
        "/oauth/revoke/": {
            "post": {
                "operationId": "oauth_revoke",
                "summary": "Token revocation (RFC 7009): an agent revokes its own token.",
                "tags": [OAUTH_TAG],
                "security": [{}],
                "requestBody": _form(
                    {
                        "token": _string("The access or refresh token."),
                        "token_type_hint": _string("A hint.", enum=["access_token", "refresh_token"]),
                        **agent_credentials,
                    },
                    ["token"],
                ),
                "responses": {
                    "200": {"description": "Revoked, or unknown (RFC 7009 §2.2): the answer is the same."},
                    "400": _error("Malformed request."),
                    "401": bad_client,
                },
            }
        },
        "/oauth/introspect/": {
            "post": {
                "operationId": "oauth_introspect",
                "summary": "Token introspection (RFC 7662) for MCP servers, with optional tool context.",
                "tags": [OAUTH_TAG],
                "security": [{"mcpServerBasic": []}],
                "requestBody": _form(
                    {
                        "token": _string("The bearer token the agent presented."),
                        "tool": _string("With action: may this token call this tool?"),
                        "action": _string("The tool's action, e.g. read."),
                        "token_type_hint": _string("Ignored: only access tokens are introspected."),
                    },
                    ["token"],
                ),
                "responses": {
                    "200": _json("Introspection", "The token's state at this MCP server.", NO_STORE),
                    "400": _error("Malformed request.", **NO_STORE),
                    "401": _error("The MCP server failed to authenticate.", **NO_STORE),
                },
            }
        },
        "/oauth/register/": {
            "post": {
                "operationId": "oauth_register",
                "summary": "Dynamic Client Registration (RFC 7591): an agent registers itself.",
                "tags": [OAUTH_TAG],
                "security": [{}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/ClientMetadata"}}},
                },
                "responses": {
                    "201": _json("ClientInformation", "The agent is registered."),
                    "400": _error("invalid_redirect_uri or invalid_client_metadata."),
                    "401": _error("Registration is not open to this caller."),
                },
            }
        },
    }


def add_oauth_endpoints(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the OAuth endpoints and their bodies."""
    result.setdefault("paths", {}).update(_paths())
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    tags = result.setdefault("tags", [])
    if not any(tag.get("name") == OAUTH_TAG for tag in tags):
        tags.append({"name": OAUTH_TAG, "description": "The OAuth 2.1 endpoints agents and MCP servers use."})
    return result
