from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # Connects the login and console-change receivers, and registers models with auditlog.
        from audit.signals import track_console_changes

        track_console_changes()
