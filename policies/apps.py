from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        # Changes to what decide() reads void the cached introspection answers.
        from policies.introspection import connect_signals

        connect_signals()
        # Deleting a hop policy ends (and records) the tokens exchanged through it.
        from django.db.models.signals import pre_delete

        from policies.models import ExchangePolicy
        from policies.revocation import end_hop_tokens

        pre_delete.connect(end_hop_tokens, sender=ExchangePolicy, dispatch_uid="revocation:hop")
