"""Writing restored disks over SSH, for sites whose imageio is slow or unusable.

The VM is recreated from its OVF with empty disks through the API as in every restore (the
engine makes each new disk's volume); then each disk's merged data is written straight into that
volume on a host: `qemu-nbd` on the host opens the volume writable in its own format, and a local
`qemu-img convert -n` writes the point's chain into it through a forwarded unix socket, leaving
the zero areas of a fresh file volume untouched. On block storage the LV is activated first and
deactivated after, if the restore activated it. Never netcat here: restored data goes encrypted.
"""

from pathlib import Path

import paramiko

from core.cleanup import Cleanup
from core.openssh import SshError
from core.ssh import connection_problem
from inventory.models import Host
from inventory.ssh import open_client
from jobs.errors import JobError
from ovirt.volumes import domain_location
from repository.models import BackupPoint
from strategies.ssh_transfer import has_key, host_candidates, ssh_target
from strategies.ssh_transfer.transport import HostSession

TRANSFERS = ("auto", "imageio", "ssh")


def restore_transfer(point: BackupPoint, wanted: str = "auto") -> tuple[str, str]:
    """("ssh" or "imageio", why): the path a restore of this point writes its disks by.

    A point the SSH transfer made restores over SSH when a host of its VM can be read with a key;
    every other point through imageio, unless asked otherwise."""
    hosts = [h for h in host_candidates(point.vm) if has_key(h)]
    if wanted == "imageio":
        return "imageio", "through the engine's image transfers (imageio), as asked"
    if wanted == "ssh" or (wanted == "auto" and point.strategy == "ssh_transfer"):
        if hosts:
            return "ssh", f"over SSH into the new volumes on host {hosts[0].name} (the data goes encrypted)"
        if wanted == "ssh":
            raise ValueError(f"No host of VM {point.vm.name}'s cluster is up with an SSH key to restore over SSH.")
        return "imageio", "through imageio: no host of the VM's cluster is up with an SSH key"
    return "imageio", "through the engine's image transfers (imageio)"


class SshDiskWriter:
    """Writes restored disks into their new volumes on one host; closed by the cleanup stack."""

    def __init__(self, connection, point: BackupPoint, *, job, cleanup: Cleanup):
        self.connection = connection
        self.job = job
        self.locations = {}
        failures = []
        for host in host_candidates(point.vm):
            if not has_key(host):
                continue
            try:
                self.session = _open(host, job)
            except (SshError, JobError) as e:
                failures.append(str(e))
                continue
            cleanup.add(f"close SSH to host {host.name}", self.session.close)
            job.log("info", f"Writing the restored disks on host {host.name} ({host.address}) over SSH")
            return
        raise JobError(" ".join(failures) or f"No host of VM {point.vm.name}'s cluster is up with an SSH key.")

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


def _open(host: Host, job) -> HostSession:
    if not host.ssh_host_key:
        try:
            open_client(host).close()
        except (ValueError, paramiko.SSHException, OSError) as e:
            raise JobError(connection_problem(e, f"{host.ssh_user}@{host.address}:{host.ssh_port}")) from None
    session = HostSession(ssh_target(host), job=job, host_pk=host.pk)
    try:
        session.check_login()
    except SshError:
        session.close()
        raise
    return session
