from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Recovery"

    def ready(self) -> None:
        from jobs.models import Job
        from jobs.runner import register_handler
        from recovery.restore import run_restore
        from strategies.ssh_transfer import deactivate_left_lvs

        # What a dead restore made on the engine is undone from its recorded engine objects; the
        # logical volumes a restore over SSH activated on a host are deactivated first.
        register_handler(Job.Kind.RESTORE, run_restore, moves_data=True, on_abandoned=deactivate_left_lvs)
