"""SSH transfer: the engine only for metadata and snapshots; volumes read off the hypervisor over SSH.

Full: a snapshot (the shared consistency window), then for each disk the volumes of its chain up
to the snapshot's image, as the engine lists them (`disks/{id}/disksnapshots` with parents), read
on a host at the path vdsm gives them (ovirt.volumes), merged here into one standalone QCOW2.
Incremental: only the volumes made since the kept snapshot, merged into one QCOW2 layer whose
backing file is the previous point's image. The snapshot stays for the next run and the older
one is removed once the new point is safe, as with image transfer. On block storage each logical
volume is activated first and deactivated after, if this run activated it.

The data moves over OpenSSH (the host's key, or its password, in a 0600 file; its pinned host key), or
with the `netcat` option over a plain TCP connection the host opens for this transfer only (not
encrypted; SHA-256 checked end to end). See hosts/session.py for the measurements behind the choice;
the host is chosen and logged in to by hosts/login.py, and the copied layers merged by hosts/chain.py.
"""

import json
import shlex
from concurrent.futures import Future
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from core.cleanup import Cleanup
from core.errors import Cancelled, OperatorError
from hosts.chain import image_info, merge_layers
from hosts.login import deactivate_left_lvs, host_candidates, open_session
from hosts.session import HostSession
from inventory.models import VM, Disk
from jobs.errors import JobError
from ovirt.errors import EngineError
from ovirt.snapshots import snapshot_disk_images
from ovirt.volumes import DomainLocation, Volume, disk_volumes, domain_location, volume_chain
from repository.models import BackupPoint
from repository.writer import PointWriter
from strategies.base import BackupRequest, Option, RestartAsFull, Strategy, Window

MiB = 1024**2
NETCAT_WARNING = "netcat traffic is not encrypted: use it only on a network you trust"


class SshTransferStrategy(Strategy):
    name = "ssh_transfer"
    label = "SSH transfer"
    incremental = True
    min_api_version = (4, 0)
    permits = ("manipulate_vm_snapshots",)  # a snapshot made and removed; the volumes are read over SSH

    options = (
        Option(
            "netcat",
            bool,
            label="SSH transfer through netcat",
            help="Faster, but netcat traffic is not encrypted: use it only on a network you trust.",
            default=False,
        ),
    )

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        # Any host logs in: with its own key, its password, or root's login with the site key.
        if not host_candidates(vm):
            return "no host of the VM's cluster is up to read its volumes on"
        return ""

    @classmethod
    def abandon(cls, job) -> None:
        # The LVs a dead worker activated on hosts, deactivated before the engine's undo merges its
        # snapshot, and whether or not the engine answers.
        deactivate_left_lvs(job)

    # ----- the window: a host session, then the snapshot -------------------------------------

    def __init__(self, *, job, connection, request: BackupRequest):
        super().__init__(job=job, connection=connection, request=request)
        self.netcat = bool(self.option("netcat"))
        self.locations: dict[str, DomainLocation] = {}
        self.session: HostSession | None = None

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        # A login to a host before any snapshot, so a host fault leaves nothing on the engine.
        self.session = open_session(self.request.vm, job=self.job, cleanup=cleanup, purpose="read its volumes on")
        self.job.log(
            "info", f"Reading volumes on host {self.session.target.name} ({self.session.target.address}) over SSH"
        )
        if self.netcat:
            self.job.log("warning", f"Netcat mode: {NETCAT_WARNING}.")
        window = self.open_snapshot_window(cleanup)
        window.disk_images = snapshot_disk_images(self.connection, self.vm_id, window.base_id)
        return window

    # ----- one disk ---------------------------------------------------------------------------

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        name = f"{disk.id}.qcow2"
        parent, backing = writer.parent_file(disk.id, name)
        previous = writer.point.parent if backing else None
        chain = self.chain_to_read(disk, window.disk_images[disk.id], previous)
        location = self.location(disk)
        files = [writer.part(name)] + [writer.part(f"{disk.id}.layer{n}") for n in range(1, len(chain))]
        read = 0

        def progress(n: int) -> None:
            self.job.set_progress(base + min(read + n, disk.provisioned_size), total)

        # A lone full volume's file is stored as it arrives, so its checksum can be taken on the way;
        # layers are rebased and merged afterwards, and hashed then.
        as_copied = len(chain) == 1 and backing is None
        try:
            for volume, out in zip(chain, files, strict=True):
                path = location.volume_path(disk.id, volume.id)
                if location.block:
                    self.session.activate_lv(location.id, volume.id, disk=disk.alias)
                moved, checksum = self.read_volume(disk, volume, path, out, checksum=as_copied, progress=progress)
                read += moved
        except (OperatorError, OSError) as failure:
            # A volume merged away (its file gone) or rebased (its header naming another parent) under
            # the reader is a chain the engine changed: a full started again. Else the failure stands.
            self.check_chain_after(failure, disk, chain, window.disk_images[disk.id], previous)
            raise
        # Nothing on the engine holds the volumes read over SSH: a snapshot removed meanwhile (by
        # someone else: ours wait for this backup, see jobs.snapshot_removals) merges them under the
        # reader. The chain as the engine lists it now must be the one read.
        self.check_chain_unchanged(disk, chain, window.disk_images[disk.id], previous)
        merge_layers(files, backing)
        final_check = image_info(files[0])
        if final_check["virtual-size"] != disk.provisioned_size:
            raise JobError(
                f"Disk {disk.alias}: the volumes read hold {final_check['virtual-size']} bytes, the engine says "
                f"the disk has {disk.provisioned_size}; the chain read is not this disk's."
            )
        if checksum and as_copied:
            # Taken as the bytes landed (netcat's end-to-end SHA-256): it spares reading the file again.
            digest = Future()
            digest.set_result(checksum)
        else:
            digest = writer.hash_soon(files[0])
        final = self.commit_disk(writer, disk, name, fmt="qcow2", parent=parent, parent_file=backing, digest=digest)
        kind = f"{len(chain)} volume(s)" + (" since the kept snapshot" if backing else "")
        self.job.log(
            "info",
            f"Disk {disk.alias}: {kind} read, {read // MiB} MiB; {final.stat().st_blocks * 512 // MiB} MiB stored",
        )
        return read

    def read_volume(
        self, disk: types.Disk, volume: Volume, path: str, out: Path, *, checksum: bool, progress
    ) -> tuple[int, str]:
        """One volume into `out`: a QCOW2 as its file (only up to its end on an LV), RAW through qemu-nbd.
        Returns the bytes read and, when asked (`checksum`) or through netcat, the checksum of the file
        as copied ("" otherwise)."""
        block = self.location(disk).block
        # A QCOW2 on a file domain is copied as it is and its header checked here afterwards, which
        # spares a command on the host per volume; a RAW volume is served by qemu-nbd in the format
        # asked for, and a QCOW2 on an LV is read up to its end, so those are looked at first.
        copied_as_is = volume.format == "cow" and not block
        fmt = "qcow2" if copied_as_is else self.check_volume(disk, volume, self.session.volume_info(path))
        cancelled = self.job.cancel_is_requested
        try:
            if fmt == "raw":
                # On an LV the volume is the whole LV, longer than the disk: read only the disk's size,
                # as vdsm's NBD server exposes it.
                size = disk.provisioned_size if block else None
                read = self.session.read_nbd(path, "raw", out, size=size, progress=progress, cancelled=cancelled)
                return read, ""
            length = self.qcow2_end(path) if block else None
            if self.netcat:
                moved = self.session.read_file_netcat(path, out, length=length, progress=progress, cancelled=cancelled)
            else:
                moved = self.session.read_file(
                    path, out, length=length, checksum=checksum, progress=progress, cancelled=cancelled
                )
        except Cancelled:
            self.job.log("warning", "Cancel requested: stopped reading the volumes")
            raise
        if copied_as_is:
            self.check_volume(disk, volume, image_info(out))
        return moved

    def check_volume(self, disk: types.Disk, volume: Volume, info: dict) -> str:
        """The volume's format ("qcow2" or "raw") from its `qemu-img info`, once it is the one the engine
        names: a QCOW2 backed by the volume the engine says is its parent, a RAW with no parent."""
        fmt = info.get("format")
        backing = info.get("backing-filename") or info.get("full-backing-filename")
        expected = volume.parent_id
        where = f"volume {volume.id} on host {self.session.target.name}"
        if fmt == "qcow2" and (Path(backing).name if backing else None) != expected:
            # Unless the engine changed the chain while it was read (move_disk checks that then).
            raise JobError(
                f"Disk {disk.alias}: {where} is backed by {backing or 'nothing'}, but the engine says its parent "
                f"is {expected or 'none'}; the host's chain is not the engine's. Nothing was stored."
            )
        if fmt == "raw" and expected is not None:
            raise JobError(f"Disk {disk.alias}: RAW volume {volume.id} has a parent; vdsm never makes that.")
        if fmt not in ("qcow2", "raw"):
            raise JobError(f"Disk {disk.alias}: {where} is {fmt}, neither QCOW2 nor RAW.")
        if volume.format and (fmt == "qcow2") != (volume.format == "cow"):
            raise JobError(
                f"Disk {disk.alias}: {where} is {fmt.upper()}, but the engine says it is "
                f"{'QCOW2' if volume.format == 'cow' else 'RAW'}. Nothing was stored."
            )
        return fmt

    def qcow2_end(self, path: str) -> int:
        """Where a QCOW2 on a logical volume ends (the LV is larger: vdsm extends it in chunks).

        Checked without its backing file: the layers below are LVs that may not be active here."""
        spec = json.dumps({"driver": "qcow2", "backing": None, "file": {"driver": "host_device", "filename": path}})
        out = self.session.run(
            f"qemu-img check -U --output=json {shlex.quote('json:' + spec)}", what=f"checking {path}"
        )
        return int(json.loads(out)["image-end-offset"])

    def location(self, disk: types.Disk) -> DomainLocation:
        sd_id = disk.storage_domains[0].id
        if sd_id not in self.locations:
            self.locations[sd_id] = domain_location(self.connection, sd_id)
        return self.locations[sd_id]

    def chain_to_read(self, disk: types.Disk, top: str, previous: BackupPoint | None) -> list[Volume]:
        """The volumes to read, base first: up to `top` (the window's snapshot's image), from the disk's
        base for a full, from just above the kept snapshot's image for an incremental on `previous`.

        An incremental whose chain does not lead from the kept snapshot to the new one (the kept one or
        a volume between them was removed or merged on the engine since it was checked) cannot tell
        its new layers apart: it starts again as a full, saying why (RestartAsFull)."""
        volumes = disk_volumes(self.connection, disk.id)
        if previous is None:
            return volume_chain(volumes, top, disk=disk.alias)
        above = self.kept_volume(previous, disk)
        try:
            chain = volume_chain(volumes, top, above=above, disk=disk.alias)
        except EngineError as e:
            raise self.chain_changed(disk, previous, str(e).rstrip(".")) from None
        if not chain:
            raise self.chain_changed(
                disk, previous, f"the engine names volume {top} as its image in both the kept and the new snapshot"
            )
        return chain

    def kept_volume(self, previous: BackupPoint, disk: types.Disk) -> str:
        """The volume of `disk` in the snapshot the previous point kept: the layers above it are new."""
        if not hasattr(self, "_kept"):
            try:
                self._kept = snapshot_disk_images(self.connection, self.vm_id, previous.base_id)
            except sdk.NotFoundError:
                raise self.chain_changed(disk, previous, "the kept snapshot was removed on the engine") from None
        volume = self._kept.get(disk.id)
        if volume is None:
            raise JobError(f"Disk {disk.alias} is not in the snapshot kept by backup {previous.pk}.")
        return volume

    def check_chain_after(
        self, failure: Exception, disk: types.Disk, chain: list[Volume], top: str, previous: BackupPoint | None
    ) -> None:
        """After reading the chain failed: RestartAsFull when the engine changed it meanwhile; nothing
        when it did not, or cannot say (an engine that went away): the failure is then the one told."""
        if isinstance(failure, RestartAsFull):
            return
        try:
            self.check_chain_unchanged(disk, chain, top, previous)
        except RestartAsFull:
            raise
        except Exception:
            pass

    def check_chain_unchanged(
        self, disk: types.Disk, chain: list[Volume], top: str, previous: BackupPoint | None
    ) -> None:
        """The volumes read are still the disk's chain up to `top`, as the engine lists them now (with
        the same parents), and no merge is under way on the disk; else the point would hold a chain
        that no longer exists: a full started again (RestartAsFull), or for a full already started
        again, a failure in words (see Strategy.backup)."""
        problem = ""
        try:
            volumes = disk_volumes(self.connection, disk.id)
            status = self.connection.system_service().disks_service().disk_service(disk.id).get().status
        except sdk.NotFoundError:
            problem = "the disk was removed on the engine"
        if not problem:
            now = [volumes.get(v.id) for v in chain]
            if status == types.DiskStatus.LOCKED:
                problem = "the engine locked the disk (a snapshot is being removed or taken)"
            elif now != chain:
                gone = next((v.id for v, n in zip(chain, now, strict=True) if n is None), None)
                problem = f"volume {gone} is no longer on the engine" if gone else "the volumes' parents changed"
            elif top not in volumes:
                problem = f"volume {top} is no longer on the engine"
        if not problem:
            return
        raise self.chain_changed(disk, previous, f"{problem}, while its volumes were read over SSH")

    def chain_changed(self, disk: types.Disk, previous: BackupPoint | None, why: str) -> RestartAsFull:
        since = f" since the snapshot kept by backup {previous.pk}" if previous is not None else ""
        return RestartAsFull(
            f"Full backup, started again: the volume chain of disk {disk.alias}{since} changed on the engine ({why}); "
            "a snapshot of the VM was removed or merged meanwhile."
        )
