"""The management API for enterprise identity: trusted IdPs with their group mappings, and the
identities IdPs linked to humans (read, or unlink). Same rules as the console (the models' own)."""

from __future__ import annotations

from django.contrib.auth.models import Group
from rest_framework import mixins, serializers, viewsets

from console.roles import is_role_group
from identity.models import ExternalIdentity, GroupMapping, TrustedIdentityProvider
from policies.api.base import ManagementViewSet
from policies.api.serializers import ModelRules


class GroupMappingSerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all())

    class Meta:
        model = GroupMapping
        fields = ["idp_group", "group"]

    def validate_group(self, group: Group) -> Group:
        if is_role_group(group):
            raise serializers.ValidationError(
                "Console roles are not granted by assertions; map a policy group."
            )
        return group


class IdentityProviderSerializer(ModelRules, serializers.ModelSerializer):
    group_mappings = GroupMappingSerializer(many=True, required=False)

    class Meta:
        model = TrustedIdentityProvider
        fields = [
            "id",
            "name",
            "issuer",
            "jwks_url",
            "jwks",
            "algorithms",
            "groups_claim",
            "active",
            "group_mappings",
            "created",
            "updated",
        ]
        read_only_fields = ["id", "created", "updated"]

    def create(self, validated_data: dict) -> TrustedIdentityProvider:
        mappings = validated_data.pop("group_mappings", [])
        provider = super().create(validated_data)
        self._map(provider, mappings)
        return provider

    def update(self, instance: TrustedIdentityProvider, validated_data: dict) -> TrustedIdentityProvider:
        mappings = validated_data.pop("group_mappings", None)
        provider = super().update(instance, validated_data)
        if mappings is not None:  # given: the complete new list
            provider.group_mappings.all().delete()
            self._map(provider, mappings)
        return provider

    @staticmethod
    def _map(provider: TrustedIdentityProvider, mappings: list[dict]) -> None:
        for mapping in {(m["idp_group"], m["group"]) for m in mappings}:
            GroupMapping.objects.create(provider=provider, idp_group=mapping[0], group=mapping[1])


class ExternalIdentitySerializer(serializers.ModelSerializer):
    human = serializers.SlugRelatedField(source="user", slug_field="username", read_only=True)
    # The trusted IdP that linked it (by name); null: the console's SSO.
    provider = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ExternalIdentity
        fields = ["id", "issuer", "subject", "provider", "human", "created", "last_seen"]


class IdentityProviderViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Enterprise IdPs whose ID-JAGs the token endpoint honours; addressed by name."""

    queryset = TrustedIdentityProvider.objects.prefetch_related("group_mappings__group")
    serializer_class = IdentityProviderSerializer
    lookup_field = "name"
    filterset_fields = ["issuer", "active"]


class ExternalIdentityViewSet(
    ManagementViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin
):
    """Which IdP subject is which human; deleting a link makes the next sign-in a new human."""

    queryset = ExternalIdentity.objects.select_related("user", "provider").order_by("issuer", "subject")
    serializer_class = ExternalIdentitySerializer
    filterset_fields = ["issuer", "subject"]


def routes() -> list:
    from rest_framework.routers import SimpleRouter

    router = SimpleRouter()
    router.register("identity-providers", IdentityProviderViewSet, basename="identityprovider")
    router.register("external-identities", ExternalIdentityViewSet, basename="externalidentity")
    return router.urls
