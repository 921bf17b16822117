"""The console's pages for enterprise identity: trusted IdPs with their group mappings, and the
external identities linked to humans (read-only: an IdP links them when a human first comes)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from unfold.admin import ModelAdmin, TabularInline

from identity.models import ExternalIdentity, GroupMapping, TrustedIdentityProvider


class GroupMappingInline(TabularInline):
    model = GroupMapping
    extra = 1
    fields = ["idp_group", "group"]


@admin.register(TrustedIdentityProvider)
class TrustedIdentityProviderAdmin(ModelAdmin):
    list_display = ["name", "issuer", "algorithms", "active"]
    list_filter = ["active"]
    search_fields = ["name", "issuer"]
    readonly_fields = ["created", "updated"]
    fieldsets = [
        (None, {"fields": ["name", "issuer", "active"]}),
        ("Signing keys", {"fields": ["jwks_url", "jwks", "algorithms"]}),
        ("Groups", {"fields": ["groups_claim"]}),
        ("History", {"fields": ["created", "updated"]}),
    ]
    inlines = [GroupMappingInline]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "jwks_url":
            kwargs["assume_scheme"] = "https"  # Django 6's default; silences its transition warning
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(ModelAdmin):
    list_display = ["subject", "issuer", "provider", "user", "created", "last_seen"]
    list_filter = ["issuer"]
    search_fields = ["subject", "user__username", "issuer"]
    readonly_fields = ["issuer", "subject", "provider", "user", "created", "last_seen"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
