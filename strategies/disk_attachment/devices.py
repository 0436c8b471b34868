"""The block devices of disks attached to the proxy VM this node runs in, found as its guest finds
them: by the serial the hypervisor gives each disk, under /dev/disk/by-id."""

import os
import time
from collections.abc import Callable
from pathlib import Path

# What qemu puts in a disk's serial (the engine gives it the disk id), as a Linux guest's udev names
# it: VirtIO block devices carry 20 characters of serial; a VirtIO-SCSI disk shows as QEMU's SCSI
# disk with that serial (also cut at 20 characters by the engine's libvirt XML).
SERIAL_LENGTH = 20
PREFIXES = {"virtio": "virtio-", "virtio_scsi": "scsi-0QEMU_QEMU_HARDDISK_"}


class DeviceMissing(Exception):
    """The attached disk's device did not appear, said with what was expected and what was there."""


def device_link(disk_id: str, interface: str) -> str:
    """The name of the disk's link in the guest's /dev/disk/by-id."""
    return PREFIXES[interface] + disk_id[:SERIAL_LENGTH]


def wait_for_device(
    device_dir: Path,
    disk_id: str,
    interface: str,
    *,
    timeout: float = 60,
    check: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """The block device of the attached disk, once its link appears (hot-plug and udev take a moment);
    `check` runs between looks (a job's cancel check). Raises DeviceMissing naming the link expected
    and those found, when it does not appear within `timeout` seconds or is no block device."""
    link = device_dir / device_link(disk_id, interface)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if os.path.lexists(link):
            device = link.resolve()
            if device.is_block_device():
                return device
            raise DeviceMissing(f"{link} leads to {device}, which is not a block device.")
        if time.monotonic() > deadline:
            try:
                found = sorted(p.name for p in device_dir.iterdir())
            except OSError as e:
                found = [f"(cannot list {device_dir}: {e.strerror})"]
            shown = ", ".join(found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "")
            raise DeviceMissing(
                f"Disk {disk_id} was attached to the proxy VM, but {link.name} did not appear in {device_dir} "
                f"within {timeout:g} s (found: {shown or 'nothing'}). Check the proxy's device directory "
                f"and that its guest sees {interface.replace('_', '-')} disks."
            )
        if check is not None:
            check()
        sleep(delay)
        delay = min(delay * 1.5, 1.0)
