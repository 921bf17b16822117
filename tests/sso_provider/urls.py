"""The provider instance's doors: its sign-in page and DOT's stock OIDC endpoints."""

from django.contrib.auth import views as auth_views
from django.urls import include, path
from oauth2_provider import views as dot

oidc = [
    path("o/authorize/", dot.AuthorizationView.as_view(), name="authorize"),
    path("o/token/", dot.TokenView.as_view(), name="token"),
    path("o/userinfo/", dot.UserInfoView.as_view(), name="user-info"),
    path(".well-known/jwks.json", dot.JwksInfoView.as_view(), name="jwks-info"),
    path(
        ".well-known/openid-configuration",
        dot.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
]

urlpatterns = [
    path("", include((oidc, "oauth2_provider"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("my-agents/", auth_views.LoginView.as_view(), name="my-agents"),  # base.html links it
]
