from django.apps import AppConfig


class StrategiesConfig(AppConfig):
    name = "strategies"
    verbose_name = "Strategies"

    def ready(self) -> None:
        from core.formats import register_labels
        from jobs.placement import register_placement
        from jobs.runner import register_handler
        from ovirt.connection import declare_feature
        from strategies.backup import BACKUP, abandon_backup, backup_placement, backup_slots, run_backup
        from strategies.registry import all_strategies

        register_handler(
            BACKUP,
            run_backup,
            label="Backup",
            moves_data=True,
            on_abandoned=abandon_backup,
            slots=backup_slots,
            reads_vm_disks=True,
        )
        register_placement(BACKUP, backup_placement)
        # Pages say "Disk image transfer", never image_transfer (BackupPoint.strategy is a lower app's key).
        register_labels("strategy", {s.name: s.label for s in all_strategies().values()})
        for strategy in all_strategies().values():
            declare_feature(
                strategy.name,
                strategy.label,
                strategy.min_api_version,
                permits=strategy.permits if strategy.implemented else (),
                host_versions=strategy.min_host_versions if strategy.implemented else None,
            )
