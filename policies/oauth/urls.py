"""
The OAuth endpoints, in DOT's URL namespace so that its metadata views find them.

Discovery documents are mounted at the root, with no trailing slash and no redirect: MCP clients
do not follow redirects on ``/.well-known/*``.
"""

from django.urls import path
from oauth2_provider import views as dot

from policies.oauth.metadata import ServerMetadataView
from policies.oauth.pending import PendingAuthorizationView
from policies.oauth.registration import AgentRegistrationManagementView, AgentRegistrationView
from policies.oauth.views import AgentTokenView, ConsentView, IntrospectionView

app_name = "oauth2_provider"

urlpatterns = [
    path(
        ".well-known/oauth-authorization-server", ServerMetadataView.as_view(), name="oauth-server-metadata"
    ),
    path(
        ".well-known/openid-configuration",
        dot.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
    path(".well-known/jwks.json", dot.JwksInfoView.as_view(), name="jwks-info"),
    path("oauth/authorize/", ConsentView.as_view(), name="authorize"),
    path("oauth/authorize/pending/<int:pk>/", PendingAuthorizationView.as_view(), name="authorize-pending"),
    path("oauth/token/", AgentTokenView.as_view(), name="token"),
    path("oauth/revoke/", dot.RevokeTokenView.as_view(), name="revoke-token"),
    path("oauth/introspect/", IntrospectionView.as_view(), name="introspect"),
    path("oauth/userinfo/", dot.UserInfoView.as_view(), name="user-info"),
    path("oauth/register/", AgentRegistrationView.as_view(), name="dcr-register"),
    path(
        "oauth/register/<str:client_id>/",
        AgentRegistrationManagementView.as_view(),
        name="dcr-register-management",
    ),
]
