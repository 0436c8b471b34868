"""The guest's writes: bytes at an offset of a disk, or a file of a filesystem on it, as the guest
would write them (a test's stand-in for a program running in the VM)."""

import contextlib
import urllib.parse
import uuid

from ovirtsim import guest_images, qemu
from ovirtsim.engine.core import EngineCore
from ovirtsim.errors import bad_request, conflict


class GuestIo(EngineCore):
    def _guest_disk(self, ident: str) -> dict:
        """A disk by id, or a VM's boot disk (else its first) by the VM's id."""
        with self.store.lock:
            if ident in self.store["vms"]:
                vm = self.store["vms"][ident]
                attachments = sorted(vm["disk_attachments"], key=lambda a: not a["bootable"])
                if not attachments:
                    raise bad_request(f"VM {vm['name']} has no disks")
                ident = attachments[0]["disk_id"]
            return self.get("disks", ident)

    @contextlib.contextmanager
    def _guest_writable(self, disk: dict):
        """The disk held for a guest write: its top volume (path, format) stays the top meanwhile."""
        with self._volume_locks[disk["id"]], self.prepared(disk) as host_id:  # a merge may replace the top
            with self.store.lock:
                if disk["status"] == "illegal":
                    raise conflict(f"disk {disk['name']} is illegal")
                backup = self.backup_of_disk(disk["id"])
                if backup is not None and backup["type"] == "cold":
                    raise conflict(f"disk {disk['name']} is locked by backup {backup['id']} of a VM that is down")
                top = disk["volumes"][-1]
                path = self.volume_path(disk, top["id"], host_id=host_id)
            yield path, "qcow2" if top["format"] == "cow" else "raw"

    def guest_write(self, ident: str, offset: int, data: bytes) -> None:
        """Write as the running guest would: into the active volume, through qemu."""
        from ovirt_imageio._internal import nbd

        disk = self._guest_disk(ident)
        if offset < 0 or offset + len(data) > disk["provisioned_size"]:
            raise bad_request(f"write of {len(data)} bytes at {offset} is outside disk {disk['name']}")
        with self._guest_writable(disk) as (path, fmt):
            vm_qemu = self.qemu_of_disk(disk["id"])
            if vm_qemu is not None:
                vm_qemu.write(disk["id"], offset, data)
                return
            # Nothing holds the volume (a VM that is down): a qemu-nbd of its own.
            server = qemu.NbdServer(path, self.run_dir / f"g-{uuid.uuid4().hex[:8]}.sock", fmt=fmt, read_only=False)
            server.start()
            try:
                with nbd.open(urllib.parse.urlparse(server.url)) as client:
                    client.write(offset, data)
                    client.flush()
            finally:
                server.stop()

    def guest_write_file(self, ident: str, key: str, path: str, data: bytes, *, mtime: int | None = None) -> None:
        """Rewrite one file of an ext2/3/4 filesystem of a running VM's disk, as its guest would: the
        filesystem `key` is `disk` (the whole disk), a partition `pN` or a guest LV `VG-LV`. The disk's
        active node is exported writable as a file by the VM's qemu for the duration (its guest's own
        export is down meanwhile) and debugfs edits the filesystem in it: every byte goes through qemu
        into the active volume, and the dirty bitmaps see the writes."""
        disk = self._guest_disk(ident)
        with self._guest_writable(disk):
            vm_qemu = self.qemu_of_disk(disk["id"])
            if vm_qemu is None:
                raise conflict(
                    f"disk {disk['name']} is not plugged into a running VM: only a running guest changes its files"
                )
            with vm_qemu.writable_file(disk["id"]) as device:
                try:
                    with guest_images.located(device, key) as (offset, size):
                        found = guest_images.fs_type(device, offset, size)
                        if found not in ("ext2", "ext3", "ext4"):
                            raise guest_images.GuestImageError(
                                f"{key} of disk {disk['name']} holds {found or 'no filesystem known to blkid'}; "
                                "files are written in ext2/3/4 filesystems only"
                            )
                        guest_images.write_ext4_file(device, offset, path, data, mtime=mtime)
                except guest_images.GuestImageError as e:
                    raise bad_request(str(e)) from None
