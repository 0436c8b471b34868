from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        from policies.coverage import covering_policy
        from strategies.backup import register_policy_finder

        # Back up now uses the same coverage as the pages and the scheduler.
        register_policy_finder(covering_policy)
