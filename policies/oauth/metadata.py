"""RFC 8414 metadata: DOT's document, corrected where this server differs from DOT's defaults."""

import json

from django.http import JsonResponse
from oauth2_provider.views import OAuthServerMetadataView

# Introspection is for MCP servers, which always authenticate; "none" is for public agents only.
INTROSPECTION_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class ServerMetadataView(OAuthServerMetadataView):
    def get(self, request, *args, **kwargs):
        data = json.loads(super().get(request, *args, **kwargs).content)
        data["introspection_endpoint_auth_methods_supported"] = INTROSPECTION_AUTH_METHODS
        response = JsonResponse(data)
        response["Access-Control-Allow-Origin"] = "*"
        return response
