"""What every management API view shares: paging, filters, role permissions per action, errors."""

from __future__ import annotations

from django.db import transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.serializers import Serializer

REVOKE_PERMISSION = ["policies.change_delegation"]


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


# For the schema: the actions that raise Conflict.
CONFLICT_RESPONSE = OpenApiResponse(description="The object is not in a state that allows this.")


class UpstreamError(APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The MCP server could not be reached or answered badly."
    default_code = "upstream_error"


class Pages(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ManagementViewSet(viewsets.GenericViewSet):
    """Paged, filtered, and checked by console.permissions.RolePermissions (incl. ``action_permissions``)."""

    pagination_class = Pages
    filter_backends = [filters.DjangoFilterBackend]
    # Extra actions name the model permissions they need instead of the HTTP method's.
    action_permissions: dict[str, list[str]] = {}

    # Model writes with many-to-many fields are several statements: all or nothing.
    @transaction.atomic
    def perform_create(self, serializer) -> None:
        serializer.save()

    @transaction.atomic
    def perform_update(self, serializer) -> None:
        serializer.save()

    def act(self, serializer_class: type[Serializer]) -> dict:
        """The action's request body, validated (a 400 naming the fields otherwise)."""
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


def revoked(count: int) -> Response:
    return Response({"revoked": count})
