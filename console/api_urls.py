"""The REST API under /api/: each app's endpoints, and the OpenAPI schema that describes them."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from identity.api import routes as identity_routes

urlpatterns = [
    path("", include("policies.api.urls")),
    path("audit/", include("audit.api.urls")),
    path("identity/", include(identity_routes())),  # trusted IdPs, linked identities
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
