from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from console import security

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("", include("policies.oauth.urls")),
    path("", include("policies.urls")),
    path("audit/", include("audit.urls")),
    path("api/", include("console.api_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("identity.urls")),  # console SSO (identity.sso)
    path("accounts/two-factor/setup/", security.two_factor_setup, name="two-factor-setup"),
    path("accounts/two-factor/verify/", security.two_factor_verify, name="two-factor-verify"),
    path("admin/", admin.site.urls),
]

# Programs calling /api/, /oauth/ or /.well-known/ get a JSON 404, people the HTML page.
handler404 = "console.errors.not_found"
