from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Enterprise identity"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        import identity.checks  # noqa: F401  (registers the start-up checks)
        from identity.grant import JWT_BEARER, id_jag_grant
        from identity.models import ExternalIdentity, GroupMapping, TrustedIdentityProvider
        from policies.oauth.views import EXTENSION_GRANTS

        # The token endpoint serves grants DOT lacks from this registry; registered from here so
        # that policies never imports identity.
        EXTENSION_GRANTS[JWT_BEARER] = id_jag_grant
        # Console changes to trusted IdPs and links are model diffs in the trail, like the rest.
        auditlog.register(TrustedIdentityProvider, exclude_fields=["updated", "group_mappings"])
        auditlog.register(GroupMapping)
        auditlog.register(ExternalIdentity, exclude_fields=["last_seen"])
