"""Snapshot removals of ours announced while they are asked of the engine (jobs.snapshot_removals)."""

from django.db import models
from django.utils import timezone


class SnapshotRemoval(models.Model):
    """A removal of one of a VM's snapshots about to be asked of the engine by our code outside the
    VM's backups (retention, a deletion, the reaper), announced for as long as it is being asked.
    jobs.snapshot_removals says why and how it keeps clear of the VM's backups."""

    vm_engine_id = models.UUIDField(db_index=True)
    snapshot_id = models.CharField(max_length=64)
    holder = models.CharField(max_length=200, help_text="Who asks, for people.")
    node = models.CharField(max_length=100)
    pid = models.IntegerField()
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()

    def __str__(self) -> str:
        return f"removal of snapshot {self.snapshot_id} of VM {self.vm_engine_id} by {self.holder}"
