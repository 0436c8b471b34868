"""Disk image transfer: snapshot, download each disk snapshot through ovirt-imageio.

Full: every selected disk as a standalone QCOW2 (zero extents skipped by the client).
Incremental: only the layer made since the kept snapshot (`shallow=true`), written as a QCOW2
whose backing file is the previous point's image. The newest snapshot stays on the engine for
the next run; the one before it is removed (the engine merges it) once the new point is safe.
"""

import ovirtsdk4.types as types
from ovirt_imageio import client

from core.cleanup import Cleanup
from ovirt.snapshots import snapshot_disk_images
from ovirt.transfers import tracked_transfer
from repository.models import BackupPoint
from repository.writer import PointWriter
from strategies.base import Strategy, Window

MiB = 1024**2


class ImageTransferStrategy(Strategy):
    name = "image_transfer"
    label = "Disk image transfer"
    incremental = True
    min_api_version = (4, 2)
    default = True
    # A snapshot made and removed (CreateSnapshotForVm, RemoveSnapshot), its disks downloaded
    # (TransferDiskImage of an existing image checks edit_disk_properties on the disk).
    permits = ("manipulate_vm_snapshots", "edit_disk_properties")

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        window = self.open_snapshot_window(cleanup)
        window.disk_images = snapshot_disk_images(self.connection, self.vm_id, window.base_id)
        return window

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        name = f"{disk.id}.qcow2"
        parent, backing = writer.parent_file(disk.id, name)
        part, digest = writer.part(name), None
        with tracked_transfer(
            self.connection,
            snapshot_id=window.disk_images[disk.id],
            shallow=backing is not None,
            job=self.job,
            base=base,
            total=total,
            what=f"downloading disk {disk.alias}",
        ) as (handle, progress):
            client.download(
                handle.url,  # the path the job names: the host, or the engine's proxy
                str(part),
                self.connection.ca_file,
                fmt="qcow2",
                secure=self.connection.verify_tls,
                progress=progress,
                backing_file=backing,
                backing_format="qcow2" if backing else None,
            )
            digest = writer.hash_soon(part)  # before the transfer is finalized, so both proceed at once
        final = self.commit_disk(writer, disk, name, fmt="qcow2", parent=parent, parent_file=backing, digest=digest)
        self.job.log("info", f"Disk {disk.alias}: {final.stat().st_blocks * 512 // MiB} MiB stored")
        return handle.transferred or 0
