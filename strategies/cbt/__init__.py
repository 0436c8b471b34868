"""Change block tracking (oVirt 4.4+ incremental backup): a VM backup with checkpoints, no snapshot;
only the extents the guest changed since the last checkpoint are read. Not implemented yet."""

from inventory.models import VM, Disk
from strategies.base import Strategy


class CbtStrategy(Strategy):
    name = "cbt"
    label = "Change block tracking"
    incremental = True
    min_api_version = (4, 4)
    implemented = False
    base_noun = "checkpoint"

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        if not any(not d.incremental_blocker() for d in disks):
            return "no disk of this VM has incremental backup enabled"
        return ""
