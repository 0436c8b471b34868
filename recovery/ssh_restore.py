"""Writing restored disks over SSH, for sites whose imageio is slow or unusable.

The VM is recreated from its OVF with empty disks through the API as in every restore (the
engine makes each new disk's volume); then each disk's merged data is written straight into that
volume on a host: `qemu-nbd` on the host opens the volume writable in its own format, and a local
`qemu-img convert -n` writes the point's chain into it through a forwarded unix socket, leaving
the zero areas of a fresh file volume untouched. On block storage the LV is activated first and
deactivated after, if the restore activated it. Never netcat here: restored data goes encrypted.
"""

from pathlib import Path

from core.cleanup import Cleanup
from hosts.login import host_candidates, open_session
from ovirt.volumes import domain_location
from recovery.proxy_restore import PROXY, restore_proxies, target_cluster, usable_proxy
from repository.models import BackupPoint

TRANSFERS = ("auto", "imageio", "ssh", PROXY)


def restore_transfer(point: BackupPoint, wanted: str = "auto", *, cluster: str = "") -> tuple[str, str]:
    """("ssh", "proxy" or "imageio", why): the path a restore of this point (into `cluster`, by default
    its VM's) writes its disks by.

    A point the SSH transfer made restores over SSH when a host of its VM is up (it logs in with its
    key, its password or the site key); a point of the disk attachment strategy through a proxy VM
    of the cluster whose node is online; every other point through imageio, unless asked otherwise."""
    if wanted == "imageio":
        return "imageio", "through the engine's image transfers (imageio), as asked"
    if wanted == PROXY or (wanted == "auto" and point.strategy == "disk_attachment"):
        proxy = usable_proxy(point, cluster)
        if proxy is not None:
            return PROXY, f"through proxy VM {proxy.vm.name}: attached to it, written there, detached"
        if wanted == PROXY:
            found = target_cluster(point, cluster)
            where = found.name if found is not None else cluster or "(none)"
            proxies = restore_proxies(point, cluster)
            if not proxies:
                raise ValueError(
                    f"No proxy VM is marked in cluster {where} to restore through: mark one (Inventory > "
                    "Proxy VMs, or manage.py proxy add)."
                )
            # Asked for: it waits for the proxy's node, saying so.
            return PROXY, f"through proxy VM {proxies[0].vm.name} (its node {proxies[0].node_id} is not online now)"
        return "imageio", "through imageio: no proxy VM of the cluster has its node online"
    hosts = host_candidates(point.vm)
    if wanted == "ssh" or (wanted == "auto" and point.strategy == "ssh_transfer"):
        if hosts:
            return "ssh", f"over SSH into the new volumes on host {hosts[0].name} (the data goes encrypted)"
        if wanted == "ssh":
            raise ValueError(f"No host of VM {point.vm.name}'s cluster is up to restore over SSH.")
        return "imageio", "through imageio: no host of the VM's cluster is up to write over SSH"
    return "imageio", "through the engine's image transfers (imageio)"


class SshDiskWriter:
    """Writes restored disks into their new volumes on one host; closed by the cleanup stack."""

    def __init__(self, connection, point: BackupPoint, *, job, cleanup: Cleanup):
        self.connection = connection
        self.job = job
        self.locations = {}
        self.session = open_session(point.vm, job=job, cleanup=cleanup, purpose="write the restored disks on")
        target = self.session.target
        job.log("info", f"Writing the restored disks on host {target.name} ({target.address}) over SSH")

    def close(self) -> None:
        self.session.close()

    def write(self, source: Path, disk, *, base: int, total: int) -> None:
        """The point's image `source` (with its chain) into the new disk's volume."""
        sd_id = disk.storage_domains[0].id
        if sd_id not in self.locations:
            self.locations[sd_id] = domain_location(self.connection, sd_id)
        location = self.locations[sd_id]
        volume = disk.image_id
        if location.block:
            self.session.activate_lv(location.id, volume, disk=disk.alias)
        path = location.volume_path(disk.id, volume)
        fmt = self.session.volume_info(path)["format"]

        def progress(n: int) -> None:
            self.job.set_progress(base + min(n, disk.provisioned_size), total)

        self.session.write_nbd(
            source,
            path,
            fmt,
            zeroed=not location.block,  # a new LV may hold an older one's data
            progress=progress,
            cancelled=self.job.cancel_is_requested,
        )
        self.job.log("info", f"Disk {disk.alias} written into volume {volume} over SSH")
