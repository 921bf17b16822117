from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        # Changes to what decide() reads void the cached introspection answers.
        from policies.introspection import connect_signals

        connect_signals()
