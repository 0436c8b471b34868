"""SSH transfer: the engine only for metadata and snapshots; volumes read off the hypervisor over
SSH (logical volumes activated first on block storage). Not implemented yet."""

from inventory.models import VM, Disk
from strategies.base import Strategy


class SshTransferStrategy(Strategy):
    name = "ssh_transfer"
    label = "SSH transfer"
    incremental = True
    min_api_version = (4, 0)
    implemented = False

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        # Every host has SSH credentials: its own, or root with the site key.
        return ""
