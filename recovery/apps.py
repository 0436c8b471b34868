from django.apps import AppConfig

# What a restore asks of the engine user's roles (the engine's permit names): the disks it creates
# (AddDisk on a storage domain) and uploads into (TransferDiskImage), the VM recreated from its OVF
# (ImportVmFromConfiguration) with the disks attached, and the removal of both when it fails.
RESTORE_PERMITS = (
    "create_disk",
    "edit_disk_properties",
    "import_export_vm",
    "configure_vm_storage",
    "delete_disk",
    "delete_vm",
)


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Recovery"

    def ready(self) -> None:
        from hosts.login import deactivate_left_lvs
        from jobs.nodes import register_node_hooks
        from jobs.placement import register_placement
        from jobs.runner import register_handler
        from ovirt.connection import declare_permits
        from recovery.restore import RESTORE, restore_placement, restore_slots, run_restore

        # What a dead restore made on the engine is undone from its recorded engine objects; the
        # logical volumes a restore over SSH activated on a host are deactivated first.
        register_handler(
            RESTORE,
            run_restore,
            label="Restore",
            moves_data=True,
            on_abandoned=deactivate_left_lvs,
            slots=restore_slots,
        )
        register_placement(RESTORE, restore_placement)
        declare_permits("restore", "Restore", RESTORE_PERMITS)
        # Browsing sessions hold mounts and processes of their node: its worker closes the idle ones
        # and, when it starts, every one (nothing survives a restart of the node).
        from recovery.files.sessions import close_idle_sessions_here, close_sessions_here

        register_node_hooks(on_join=close_sessions_here, on_beat=close_idle_sessions_here)
        from recovery.files.putback import PUT_BACK, put_back_placement, run_put_back

        register_handler(PUT_BACK, run_put_back, label="Files put back")
        register_placement(PUT_BACK, put_back_placement)
        # Instant restore: each step of a booted point's life is a job on the node serving its share;
        # that node's heartbeat keeps the point pinned and removes what ended ones left.
        from ovirt import domains  # noqa: F401  (registers the undo of an imported storage domain)
        from recovery.instant import upkeep
        from recovery.instant import workflow as instant

        for kind, run in (
            (instant.BOOT, instant.run_boot),
            (instant.MIGRATE, instant.run_migrate),
            (instant.DISCARD, instant.run_discard),
            (instant.PROVE, instant.run_proof),
        ):
            register_handler(kind, run, label=instant.KIND_LABELS[kind], on_abandoned=upkeep.abandon_instant)
            register_placement(kind, instant.instant_placement)
        register_node_hooks(on_join=upkeep.keep_instant_restores_here, on_beat=upkeep.keep_instant_restores_here)
