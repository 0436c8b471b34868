import time

from django.apps import AppConfig


def hold(*, job) -> dict:
    """Hold the job's slots a moment, as a short backup would, checking for a stop as it goes."""
    deadline = time.monotonic() + job.params.get("seconds", 0.3)
    while time.monotonic() < deadline:
        job.check_cancel()
        time.sleep(0.05)
    return {}


class SlotAppConfig(AppConfig):
    name = "tests.jobs.slot_app"
    label = "slot_app"

    def ready(self) -> None:
        from inventory.slots import vm_slots
        from jobs.runner import register_handler

        # The slots of a backup (engine, host, storage domains; a policy's and the node's are added
        # by their owners), claimed by the product's own path (jobs.runner.run_job).
        register_handler("test-slots", hold, moves_data=True, slots=vm_slots)
