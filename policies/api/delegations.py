"""The management API for delegations and what hangs off them: review, approval, tokens, revocation.

Every change goes through policies.services, which records it with the acting user.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from policies import services
from policies.api import serializers as s
from policies.api.base import CONFLICT_RESPONSE, REVOKE_PERMISSION, Conflict, ManagementViewSet, revoked
from policies.models import AccessToken, Delegation, RefreshToken

User = get_user_model()

# --- Delegations, tokens, humans ----------------------------------------------------------------


class DelegationFilter(filters.FilterSet):
    human = filters.CharFilter(field_name="human__username")
    agent = filters.CharFilter(field_name="agent__client_id")
    server = filters.CharFilter(field_name="server__name")

    class Meta:
        model = Delegation
        fields = ["status", "human", "agent", "server"]


class DelegationViewSet(ManagementViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Delegations come from humans' consent; here they are reviewed, approved or denied, and revoked."""

    queryset = Delegation.objects.select_related("human", "agent", "server", "approved_by")
    serializer_class = s.DelegationSerializer
    filterset_class = DelegationFilter
    action_permissions = {
        "approve": ["policies.view_delegation", "policies.approve_delegation"],
        "deny": ["policies.view_delegation", "policies.approve_delegation"],
        "revoke": REVOKE_PERMISSION,
    }

    def _decide(self, decide, body: dict) -> Response:
        try:
            delegation = decide(self.get_object(), by=self.request.user, comment=body["comment"])
        except services.DelegationStateError as error:
            raise Conflict(str(error)) from error
        return Response(s.DelegationSerializer(delegation).data)

    @extend_schema(
        request=s.ApproveSerializer, responses={200: s.DelegationSerializer, 409: CONFLICT_RESPONSE}
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """Approve a pending delegation; the waiting human's authorization completes."""
        return self._decide(services.approve_delegation, self.act(s.ApproveSerializer))

    @extend_schema(request=s.DenySerializer, responses={200: s.DelegationSerializer, 409: CONFLICT_RESPONSE})
    @action(detail=True, methods=["post"])
    def deny(self, request: Request, pk: str) -> Response:
        """Deny a pending delegation, saying why; the human sees the comment."""
        return self._decide(services.deny_delegation, self.act(s.DenySerializer))

    @extend_schema(request=None, responses=s.RevokedSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        """Revoke this delegation and its tokens; nothing else changes."""
        return revoked(services.revoke_delegation(self.get_object(), by=request.user))


class TokenFilter(filters.FilterSet):
    human = filters.CharFilter(field_name="user__username")
    agent = filters.CharFilter(field_name="application__client_id")
    server = filters.CharFilter(field_name="delegation__server__name")


class AccessTokenFilter(TokenFilter):
    class Meta:
        model = AccessToken
        fields = ["human", "agent", "server", "delegation"]


class RefreshTokenFilter(TokenFilter):
    class Meta:
        model = RefreshToken
        fields = ["human", "agent", "server", "delegation"]


TOKEN_RELATIONS = ("user", "application", "delegation__server")


class TokenViewSet(ManagementViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    @extend_schema(request=None, responses={204: OpenApiResponse(description="Revoked.")})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        """Revoke this token (and its access/refresh pair); its delegation stays."""
        services.revoke_token(self.get_object(), by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccessTokenViewSet(TokenViewSet):
    """Access tokens' metadata (never the token): who, which agent, which server, scopes, expiry."""

    queryset = AccessToken.objects.order_by("-id").select_related(*TOKEN_RELATIONS)
    serializer_class = s.TokenSerializer
    filterset_class = AccessTokenFilter
    action_permissions = {"revoke": ["policies.change_accesstoken"]}


class RefreshTokenViewSet(TokenViewSet):
    """Refresh tokens' metadata (never the token)."""

    queryset = RefreshToken.objects.order_by("-id").select_related(*TOKEN_RELATIONS)
    serializer_class = s.RefreshTokenSerializer
    filterset_class = RefreshTokenFilter
    action_permissions = {"revoke": ["policies.change_refreshtoken"]}


class HumanViewSet(ManagementViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Humans (accounts) with how many live delegations they have given; revoke all of them at once."""

    queryset = User.objects.annotate(
        live_delegations=Count(
            "delegations",
            filter=Q(delegations__status__in=[Delegation.Status.APPROVED, Delegation.Status.PENDING]),
        )
    ).order_by("username")
    serializer_class = s.HumanSerializer
    lookup_field = "username"
    lookup_value_regex = "[^/]+"
    filterset_fields = ["username", "is_active"]
    action_permissions = {"revoke_all": REVOKE_PERMISSION}

    @extend_schema(request=None, responses=s.RevokedSerializer)
    @action(detail=True, methods=["post"], url_path="revoke-all")
    def revoke_all(self, request: Request, username: str) -> Response:
        """Revoke every delegation this human has given, and their tokens; other humans are untouched."""
        return revoked(services.revoke_human_delegations(self.get_object(), by=request.user))
