from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        from jobs.runner import register_slots
        from policies.coverage import covering_policy
        from policies.schedule import policy_slots
        from strategies.backup import register_policy_finder

        # Back up now uses the same coverage as the pages and the scheduler.
        register_policy_finder(covering_policy)
        # Its backups run at most `parallel_vms` at once, counted as each is claimed.
        register_slots(policy_slots)
