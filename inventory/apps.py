from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self) -> None:
        from inventory.sync import SYNC, run_sync
        from jobs.runner import register_handler

        register_handler(SYNC, run_sync, label="Inventory sync")
