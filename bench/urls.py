"""The console's URLs, plus the floor and django-oauth-toolkit's stock views (bench only)."""

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import IntrospectTokenView, TokenView

from console.urls import urlpatterns as console_urlpatterns


@csrf_exempt
def floor(request: HttpRequest) -> JsonResponse:
    """The framework floor: what Django and the console's middleware cost, with no work at all."""
    response = JsonResponse({"active": False})
    response["Cache-Control"] = "no-store"
    return response


class StockTokenView(TokenView):
    """DOT's token endpoint as a stock deployment runs it: DOT's own validator, not the console's
    (which binds every token to a human's delegation and so serves no client_credentials)."""

    validator_class = OAuth2Validator


urlpatterns = [
    path("bench/floor/", floor),
    # The peer: DOT's introspection view, authenticated as its docs say (a Bearer token holding
    # the `introspection` scope).
    path("bench/dot/introspect/", IntrospectTokenView.as_view()),
    path("bench/dot/token/", StockTokenView.as_view()),
    *console_urlpatterns,
]
