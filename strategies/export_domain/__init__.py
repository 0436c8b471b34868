"""Export storage domain (legacy, deprecated): the VM's snapshot cloned into a new VM (or the stopped
VM itself) is exported to the export domain of its data center, whose share this node serves from
its staging directory (`EXPORT_STAGING_DIR/DC_NAME`); the node reads the exported images from there
into sparse RAW files, then the exported VM and the clone are removed. Full backups only.

Engine objects are recorded as they are made: the snapshot, the clone ("vm") and the export
("exported_vm"); the cleanup stack removes them newest first (the export, the clone, the snapshot),
and so does the reaper for a dead worker."""

import os
import re
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from django.conf import settings

from core.cleanup import Cleanup
from core.qemu_img import ConvertError, convert
from inventory.models import VM, Disk, StagingShare, StorageDomain
from jobs.errors import JobError
from jobs.models import Job
from jobs.placement import Placement
from ovirt.exports import (
    clone_vm_from_snapshot,
    data_center_export_domain,
    export_vm,
    exported_vm_ids,
    exported_vms,
    remove_exported_vm,
    wait_cloned,
    wait_export_ended,
    wait_exported,
)
from ovirt.vms import remove_vm, vm_disks, vm_service
from repository.models import BackupPoint
from repository.writer import PointWriter
from strategies.base import Strategy, Window
from strategies.export_domain.staging import staging_share

MiB = 1024**2
# A clone of ours is named CLONE_PREFIX + the job's id + "-" + the VM's name (cut at 64 characters):
# a crashed run's clone, and its copy in the export domain, are found by that name.
CLONE_PREFIX = "backup-clone-"
CLONE_NAME = re.compile(re.escape(CLONE_PREFIX) + r"(\d+)-")
# vdsm's volume formats, as its .meta files spell them, to qemu-img's.
META_FORMATS = {"COW": "qcow2", "RAW": "raw"}


def clone_name(job_id: int, vm_name: str) -> str:
    return f"{CLONE_PREFIX}{job_id}-{vm_name}"[:64]  # the engine's VM names hold at most 64 characters


def export_domain_of(vm: VM) -> StorageDomain | None:
    """The export domain attached to the VM's data center, as last synced."""
    data_center = vm.cluster.data_center if vm.cluster is not None else None
    if data_center is None:
        return None
    return (
        StorageDomain.objects.filter(data_center=data_center, type=StorageDomain.Type.EXPORT, missing_since=None)
        .order_by("name")
        .first()
    )


def volume_format(image_dir: Path, volume: str) -> str:
    """The exported volume's format from its vdsm .meta file (never guessed from its content)."""
    meta = image_dir / f"{volume}.meta"
    try:
        lines = meta.read_text().splitlines()
    except OSError as e:
        raise JobError(f"The exported volume's metadata {meta} cannot be read: {e.strerror}.") from None
    value = next((line.split("=", 1)[1] for line in lines if line.startswith("FORMAT=")), "")
    if value not in META_FORMATS:
        raise JobError(f"The exported volume's metadata {meta} names no known format (FORMAT={value or 'nothing'}).")
    return META_FORMATS[value]


def exported_volume(image_dir: Path) -> Path:
    """The one volume of an image exported with its snapshots collapsed."""
    volumes = sorted(p for p in image_dir.glob("*") if p.suffix not in (".meta", ".lease") and p.is_file())
    if len(volumes) != 1:
        found = ", ".join(p.name for p in volumes) or "nothing"
        raise JobError(f"The export domain's image {image_dir} should hold one collapsed volume; it holds {found}.")
    return volumes[0]


class ExportDomainStrategy(Strategy):
    name = "export_domain"
    label = "Export storage domain"
    min_api_version = (4, 0)
    deprecated = True
    # A snapshot made and removed; a VM created from it and removed; exported and removed from the domain.
    permits = ("manipulate_vm_snapshots", "create_vm", "delete_vm", "import_export_vm")

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        if vm.cluster_id is None or vm.cluster.data_center_id is None:
            return "the VM's data center is not known, so neither is its export domain"
        if export_domain_of(vm) is None:
            dc = vm.cluster.data_center.name
            return (
                f"no export domain is attached to data center {dc}: serve this node's staging share "
                f"({staging_share(dc)}: manage.py staging_share {dc}), create the export domain on it and attach it "
                f"to {dc}"
            )
        return ""

    @classmethod
    def placement(cls, job) -> Placement:
        """On the node that serves the data center's staging share (the export domain is on it), when
        one was recorded (manage.py staging_share); else a node of the cluster, which must serve it."""
        cluster = job.vm.cluster if job.vm is not None else None
        staged = (
            StagingShare.objects.filter(data_center_id=cluster.data_center_id).first()
            if cluster is not None and cluster.data_center_id is not None
            else None
        )
        if staged is None:
            return super().placement(job)
        return (
            super()
            .placement(job)
            .both(
                Placement(
                    node=staged.node_id,
                    says=f"serves data center {cluster.data_center.name}'s staging share ({staged.share})",
                )
            )
        )

    def clean_leftovers(self) -> None:
        """A crashed run's clone of this VM, and its copy in the export domain, go first (by name:
        a record lost with its job leaves nothing else to find them by)."""
        req, job, conn = self.request, self.job, self.connection
        running = set(Job.objects.running().values_list("pk", flat=True))

        def ours(name: str) -> bool:
            found = CLONE_NAME.match(name or "")
            return bool(found) and int(found[1]) not in running and clone_name(int(found[1]), req.vm.name) == name

        domain = export_domain_of(req.vm)
        if domain is not None:
            try:
                held = exported_vms(conn, str(domain.engine_id))
            except sdk.NotFoundError:
                held = []
            for exported in held:
                if ours(exported.name):
                    job.log(
                        "warning",
                        f"Removing VM {exported.name} from export domain {domain.name}, left by an earlier run",
                    )
                    remove_exported_vm(conn, str(domain.engine_id), exported.id, name=exported.name, job=job)
        for clone in conn.system_service().vms_service().list(search=f"name={CLONE_PREFIX}*"):
            if ours(clone.name):
                job.log("warning", f"Removing clone VM {clone.name}, left by an earlier run")
                wait_export_ended(conn, clone.id, name=clone.name, job=job, cancellable=False)
                remove_vm(conn, clone.id, name=clone.name, job=job)
        super().clean_leftovers()

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        return self.open_snapshot_window(cleanup)

    def stage_vm(self, window: Window, writer: PointWriter, cleanup: Cleanup, *, disks: list[types.Disk]) -> None:
        """Export the snapshot's clone (or the stopped VM itself) and find each disk's exported volume."""
        req, job, conn = self.request, self.job, self.connection
        vm = vm_service(conn, self.vm_id).get()
        dc = req.vm.cluster.data_center.name
        # The data center's attached domains come whole (storage, status): nothing to ask again.
        domain = data_center_export_domain(conn, str(req.vm.cluster.data_center.engine_id))
        if domain is None:
            raise JobError(
                f"No export domain is attached to data center {dc} on the engine: attach the one on this node's "
                f"staging share {staging_share(dc)}."
            )
        root = staging_share(dc) / domain.id
        if not (root / "dom_md" / "metadata").is_file():
            where = f"{domain.storage.address}:{domain.storage.path}" if domain.storage else "another share"
            raise JobError(
                f"Export domain {domain.name} of data center {dc} is on {where}, not on this node's staging share "
                f"{staging_share(dc)} (node {settings.NODE_NAME} finds no {root / 'dom_md' / 'metadata'}): create "
                "the data center's export domain on this node's share, or run the backup on the node that serves it."
            )
        if domain.status not in (None, types.StorageDomainStatus.ACTIVE):
            raise JobError(f"Export domain {domain.name} is {domain.status.value}: activate it in data center {dc}.")
        held = exported_vm_ids(conn, domain.id)
        if vm.status == types.VmStatus.DOWN and self.vm_id not in held:
            exported_id, exported_name, by_disk = self.vm_id, vm.name, {d.id: d.id for d in disks}
        else:
            if self.vm_id in held:
                job.log(
                    "info",
                    f"Export domain {domain.name} holds a copy of VM {vm.name} already; it is left as it is, and a "
                    "clone of the snapshot is exported instead",
                )
            exported_id, exported_name, by_disk = self.clone(window, cleanup, disks)
        started = export_vm(conn, exported_id, storage_domain=domain, name=exported_name, job=job)

        def remove_export() -> None:
            # Not while the engine still writes it (a cancel, a failure mid-way): it refuses that.
            wait_export_ended(conn, exported_id, name=exported_name, job=job, cancellable=False)
            remove_exported_vm(conn, domain.id, exported_id, name=exported_name, job=job)

        cleanup.add(f"remove VM {exported_name} from export domain {domain.name}", remove_export)
        wait_exported(conn, exported_id, storage_domain=domain, name=exported_name, started=started, job=job)
        job.log("info", f"VM {exported_name} exported to export domain {domain.name} ({root})")
        for disk in disks:
            window.staged[disk.id] = str(exported_volume(root / "images" / by_disk[disk.id]))

    def clone(self, window: Window, cleanup: Cleanup, disks: list[types.Disk]) -> tuple[str, str, dict[str, str]]:
        """A VM made from the window's snapshot: (its id, its name, the VM's disk id -> the clone's)."""
        req, job, conn = self.request, self.job, self.connection
        name = clone_name(job.pk, req.vm.name)
        clone_id = clone_vm_from_snapshot(
            conn,
            snapshot_id=window.base_id,
            name=name,
            cluster_id=str(req.vm.cluster.engine_id),
            job=job,
            source=req.vm.name,
        )

        def remove_clone() -> None:
            # A clone still being copied is locked: its removal waits for the copy to end.
            wait_export_ended(conn, clone_id, name=name, job=job, cancellable=False)
            remove_vm(conn, clone_id, name=name, job=job)

        cleanup.add(f"remove the clone VM {name}", remove_clone)
        wait_cloned(conn, clone_id, name=name, source=req.vm.name, job=job)
        job.log("info", f"VM {name} cloned from the snapshot")
        # The engine names each cloned disk after its source: ALIAS_CLONENAME.
        cloned = {d.alias: d.id for d in vm_disks(conn, clone_id)}
        by_disk = {}
        for disk in disks:
            found = cloned.get(f"{disk.alias}_{name}")
            if found is None:
                raise JobError(
                    f"The clone {name} has no copy of disk {disk.alias} (it has {', '.join(sorted(cloned)) or 'none'})."
                )
            by_disk[disk.id] = found
        return clone_id, name, by_disk

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        volume = Path(window.staged[disk.id])
        fmt = volume_format(volume.parent, volume.name)
        name = f"{disk.id}.raw"
        part = writer.part(name)
        copy_to_sparse_raw(
            volume, fmt, part, progress=lambda done: self.job.set_progress(base + done), check=self.job.check_cancel
        )
        size = os.stat(part).st_size
        if size != disk.provisioned_size:
            raise JobError(
                f"Disk {disk.alias}'s exported image holds {size} bytes, not the disk's {disk.provisioned_size}."
            )
        final = self.commit_disk(writer, disk, name, fmt="raw")
        self.job.log(
            "info",
            f"Disk {disk.alias}: read from the export domain ({volume}, {fmt}), "
            f"{final.stat().st_blocks * 512 // MiB} MiB stored",
        )
        return disk.provisioned_size


def copy_to_sparse_raw(source: Path, fmt: str, target: Path, *, progress, check) -> None:
    """An exported volume into a sparse RAW file: areas the image says are zero (or holds as zeros,
    64 KiB at a time) are neither written nor stored. A cancel stops it."""
    try:
        convert(source, fmt, target, "raw", options=["-S", "64k"], progress=progress, check=check)
    except ConvertError as e:
        raise JobError(f"Reading the exported image {source} failed: {e}") from None
