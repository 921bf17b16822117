"""The management API for configuration: MCP servers and tools, agents, policies, settings, groups.

Configuration is model CRUD, recorded by django-auditlog with the acting user (its middleware sees
the API's session user); changes with a meaning of their own (credentials, agent status, tool
import, revocation) go through policies.services, which record them.
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from oauth2_provider.generators import generate_client_secret
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from console.roles import is_role_group
from policies import services
from policies.api import serializers as s
from policies.api.base import (
    CONFLICT_RESPONSE,
    REVOKE_PERMISSION,
    Conflict,
    ManagementViewSet,
    UpstreamError,
    revoked,
)
from policies.api.serializers import raise_model_errors
from policies.models import Agent, DelegationPolicy, ExchangePolicy, McpServer, PolicySetting, Tool
from policies.tool_import import IMPORT_PERMISSIONS, ToolImportError, import_tools

# --- MCP servers and tools ----------------------------------------------------------------------


class ServerFilter(filters.FilterSet):
    class Meta:
        model = McpServer
        fields = ["resource", "active"]


@extend_schema_view(create=extend_schema(responses={201: s.ServerCreatedSerializer}))
class ServerViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """MCP servers, known by their canonical resource URI; addressed by name."""

    queryset = McpServer.objects.prefetch_related("tools")
    serializer_class = s.ServerSerializer
    lookup_field = "name"
    filterset_class = ServerFilter
    action_permissions = {
        "rotate_credentials": ["policies.change_mcpserver"],
        "import_tools": IMPORT_PERMISSIONS,
        "revoke_all": REVOKE_PERMISSION,
    }

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            server, secret = services.register_server(by=request.user, **serializer.validated_data)
        except DjangoValidationError as error:  # e.g. a concurrent registration took the name
            raise_model_errors(error)
        server.client_secret = secret
        return Response(s.ServerCreatedSerializer(server).data, status=status.HTTP_201_CREATED)

    @transaction.atomic
    def perform_destroy(self, instance: McpServer) -> None:
        # Revoke first, so the trail shows every delegation and token that went with the server.
        services.revoke_server_delegations(instance, by=self.request.user)
        instance.delete()

    @extend_schema(request=None, responses=s.CredentialsSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-credentials")
    def rotate_credentials(self, request: Request, name: str) -> Response:
        """New introspection credentials; the old ones stop working at once. The secret is shown once."""
        server = self.get_object()
        secret = services.rotate_server_credentials(server, by=request.user)
        return Response({"client_id": server.client_id, "client_secret": secret})

    @extend_schema(
        request=s.ImportToolsSerializer,
        responses={
            200: s.ImportResultSerializer,
            502: OpenApiResponse(description="The server's tools/list failed."),
        },
    )
    @action(detail=True, methods=["post"], url_path="import-tools")
    def import_tools(self, request: Request, name: str) -> Response:
        """List the live server's tools (MCP tools/list) and record what changed since the last import.

        Without ``token`` the console lists them with a 60-second discovery token of its own, which a
        server protected by this console accepts; ``token`` is for servers of another authorization server.
        """
        server = self.get_object()
        body = self.act(s.ImportToolsSerializer)
        try:
            result = import_tools(server, by=request.user, token=body.get("token"))
        except ToolImportError as error:
            raise UpstreamError(str(error)) from error
        return Response(s.ImportResultSerializer(result).data)

    @extend_schema(request=None, responses=s.RevokedSerializer)
    @action(detail=True, methods=["post"], url_path="revoke-all")
    def revoke_all(self, request: Request, name: str) -> Response:
        """Revoke every delegation and token bound to this server; other servers are untouched."""
        return revoked(services.revoke_server_delegations(self.get_object(), by=request.user))


class ToolFilter(filters.FilterSet):
    server = filters.CharFilter(field_name="server__name")

    class Meta:
        model = Tool
        fields = ["server", "risk", "available"]


class ToolViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Tools of MCP servers with their actions, risk and the description the consent page shows."""

    queryset = Tool.objects.select_related("server").prefetch_related("actions")
    serializer_class = s.ToolSerializer
    filterset_class = ToolFilter


# --- Agents and policies ------------------------------------------------------------------------


class AgentFilter(filters.FilterSet):
    owner = filters.CharFilter(field_name="user__username")

    class Meta:
        model = Agent
        fields = ["client_id", "status", "registration_source", "team", "owner"]


@extend_schema_view(create=extend_schema(responses={201: s.AgentCreatedSerializer}))
class AgentViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Agents (OAuth clients): registration, lifecycle, scope ceiling, token lifetimes, owner and team."""

    queryset = (
        Agent.objects.select_related("user")
        .prefetch_related("scope_ceiling__tool__server")
        .order_by("name", "id")
    )
    serializer_class = s.AgentSerializer
    filterset_class = AgentFilter
    action_permissions = {
        "approve": ["policies.change_agent"],
        "suspend": ["policies.change_agent"],
        "reactivate": ["policies.change_agent"],
        "revoke_tokens": REVOKE_PERMISSION,
    }

    @transaction.atomic
    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # DOT hashes the secret on save; a confidential agent's is shown in this response only.
        secret = generate_client_secret()
        agent = serializer.save(client_secret=secret, registration_source=Agent.RegistrationSource.MANUAL)
        agent.client_secret = secret if agent.client_type == Agent.CLIENT_CONFIDENTIAL else None
        return Response(s.AgentCreatedSerializer(agent).data, status=status.HTTP_201_CREATED)

    @transaction.atomic
    def perform_destroy(self, instance: Agent) -> None:
        services.revoke_agent_tokens(instance, by=self.request.user)
        instance.delete()

    def _set_status(self, new: str, *, only_from: str | None = None) -> Response:
        try:
            agent = services.set_agent_status(
                self.get_object(), new, by=self.request.user, only_from=only_from
            )
        except services.AgentStatusError as error:
            raise Conflict(str(error)) from error
        return Response(self.get_serializer(agent).data)

    @extend_schema(request=None, responses={200: s.AgentSerializer, 409: CONFLICT_RESPONSE})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """A pending agent (self-registered under the approval policy) becomes active."""
        return self._set_status(Agent.Status.ACTIVE, only_from=Agent.Status.PENDING)

    @extend_schema(request=None, responses={200: s.AgentSerializer, 409: CONFLICT_RESPONSE})
    @action(detail=True, methods=["post"])
    def suspend(self, request: Request, pk: str) -> Response:
        """The agent's tokens stop working at the next introspection; its delegations are kept."""
        return self._set_status(Agent.Status.SUSPENDED)

    @extend_schema(request=None, responses={200: s.AgentSerializer, 409: CONFLICT_RESPONSE})
    @action(detail=True, methods=["post"])
    def reactivate(self, request: Request, pk: str) -> Response:
        """A suspended agent becomes active again."""
        return self._set_status(Agent.Status.ACTIVE, only_from=Agent.Status.SUSPENDED)

    @extend_schema(request=None, responses=s.RevokedSerializer)
    @action(detail=True, methods=["post"], url_path="revoke-tokens")
    def revoke_tokens(self, request: Request, pk: str) -> Response:
        """Revoke every delegation and token of this agent; other agents keep working."""
        return revoked(services.revoke_agent_tokens(self.get_object(), by=request.user))


class PolicyFilter(filters.FilterSet):
    group = filters.CharFilter(field_name="group__name")

    class Meta:
        model = DelegationPolicy
        fields = ["group"]


class PolicyViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Delegation policies: which group may delegate which scopes to which agents, approval, lifetime."""

    queryset = DelegationPolicy.objects.select_related("group").prefetch_related(
        "agents", "may_delegate__tool__server", "approval_required__tool__server"
    )
    serializer_class = s.PolicySerializer
    filterset_class = PolicyFilter


class ExchangePolicyFilter(filters.FilterSet):
    source = filters.CharFilter(field_name="source__name")
    target = filters.CharFilter(field_name="target__name")

    class Meta:
        model = ExchangePolicy
        fields = ["source", "target"]


class ExchangePolicyViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Token exchange hops (RFC 8693): which MCP server may exchange tokens for which other one,
    with which of the target's scopes at most. Removing one ends the tokens exchanged along it."""

    queryset = ExchangePolicy.objects.select_related("source", "target").prefetch_related(
        "scopes__tool__server"
    )
    serializer_class = s.ExchangePolicySerializer
    filterset_class = ExchangePolicyFilter


class PolicySettingViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Console-wide policy settings (e.g. whether self-registered agents wait for approval)."""

    queryset = PolicySetting.objects.order_by("key")
    serializer_class = s.PolicySettingSerializer
    lookup_field = "key"


class GroupViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Groups of humans: what policies name to say who may delegate."""

    queryset = Group.objects.prefetch_related("user_set").order_by("name")
    serializer_class = s.GroupSerializer
    filterset_fields = ["name"]

    def perform_destroy(self, instance: Group) -> None:
        if is_role_group(instance):
            raise ValidationError({"name": "A console role's group cannot be deleted."})
        instance.delete()
