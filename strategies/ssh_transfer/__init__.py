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
        host = vm.host
        if host is not None and not (host.ssh_private_key or host.ssh_password):
            return f"host {host.name} has no SSH credentials"
        return ""
