from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "MCP Policy Console"

    def ready(self) -> None:
        from console.roles import ensure_roles

        # After every migrate, so that permissions of new models reach the roles at once.
        post_migrate.connect(ensure_roles, dispatch_uid="console.ensure_roles")
