"""Console SSO: start at the provider, come back to the callback (mounted under accounts/)."""

from django.urls import path

from identity.sso import SsoCallbackView, SsoStartView

urlpatterns = [
    path("sso/start/", SsoStartView.as_view(), name="sso-start"),
    path("sso/callback/", SsoCallbackView.as_view(), name="sso-callback"),
]
