"""RFC 8414 metadata: DOT's document, corrected where this server differs from DOT's defaults."""

import json

from django.http import JsonResponse
from oauth2_provider.views import OAuthServerMetadataView

# Introspection is for MCP servers, which always authenticate; "none" is for public agents only.
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# The jwt-bearer grant serves Identity Assertion JWT Authorization Grants (identity.grant).
ID_JAG_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"


class ServerMetadataView(OAuthServerMetadataView):
    def get(self, request, *args, **kwargs):
        data = json.loads(super().get(request, *args, **kwargs).content)
        data["introspection_endpoint_auth_methods_supported"] = INTROSPECTION_AUTH_METHODS
        if ID_JAG_GRANT_TYPE in data.get("grant_types_supported", []):
            # MCP Enterprise-Managed Authorization (and the ID-JAG draft §7.2) look for the profile.
            data["authorization_grant_profiles_supported"] = [ID_JAG_PROFILE]
        response = JsonResponse(data)
        response["Access-Control-Allow-Origin"] = "*"
        return response
