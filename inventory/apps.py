from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        from inventory.sync import run_sync
        from jobs.models import Job
        from jobs.runner import register_handler

        register_handler(Job.Kind.SYNC, run_sync, label="Inventory sync")
