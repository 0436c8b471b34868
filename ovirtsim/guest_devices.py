"""The block devices a proxy VM's guest sees, made real on this machine.

A backup appliance ("proxy") runs inside a VM of the cluster; the engine attaches disks and disk
snapshots to it and the guest reads them as block devices, found by serial under
`/dev/disk/by-id`. For the VMs marked as running on this machine, the simulator makes those devices:

- the VM's qemu (`vm_qemu.VmQemu`, a qemu-storage-daemon) holds the attached disk, or the disk
  snapshot's chain read-only, and exports its node over FUSE as a regular file
  (`STATE/guests/VM_ID/exports/NAME`);
- `losetup` (`-r` for a read-only attachment) turns that file into a real block device
  (`/dev/loopN`): reads go through qemu's block layer, so a snapshot's device shows the
  guest-visible content of the chain up to it, and nothing is copied;
- the guest's `/dev/disk/by-id` is a directory the simulator publishes (`STATE/guests/VM_ID/by-id`;
  there is no udev here), holding the link a Linux guest's udev makes, pointing at the loop device.

Loop devices and mounts are machine-wide and outlive a killed simulator (its qemus die with it, their
FUSE mounts are left dead): `cleanup` finds them again by their paths under `STATE/guests` and
removes them, on the next start and on `Simulator.stop()`.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

GUESTS = "guests"


class DeviceError(RuntimeError):
    pass


def guests_dir(state_dir: Path) -> Path:
    return Path(state_dir) / GUESTS


def by_id_dir(state_dir: Path, vm_id: str) -> Path:
    """The directory that plays the guest's /dev/disk/by-id."""
    return guests_dir(state_dir) / vm_id / "by-id"


def mountpoint(state_dir: Path, vm_id: str, name: str) -> Path:
    return guests_dir(state_dir) / vm_id / "exports" / name


def transient_dir(state_dir: Path, vm_id: str) -> Path:
    """Where vdsm would keep the transient overlays of writable disk-snapshot attachments."""
    return guests_dir(state_dir) / vm_id / "transient"


def link_name(disk_id: str, interface: str) -> str:
    """The /dev/disk/by-id name a Linux guest's udev gives the disk.

    The engine gives libvirt the disk id as the disk's serial. virtio-blk carries at most 20 bytes
    of it (VIRTIO_BLK_ID_BYTES), and udev links `virtio-SERIAL`. A virtio-scsi disk is QEMU's
    scsi-hd, whose VPD page 0x83 identifier is the serial cut to 20 characters (qemu's
    scsi_realize: `%.20s`), vendor-specific, so udev's scsi_id prefixes its type (0) and the
    vendor and model ("QEMU", "QEMU HARDDISK", blanks turned into underscores).
    """
    if interface == "virtio":
        return f"virtio-{disk_id[:20]}"
    if interface == "virtio_scsi":
        return f"scsi-0QEMU_QEMU_HARDDISK_{disk_id[:20]}"
    raise DeviceError(f"no guest device for a disk on interface {interface!r} (virtio or virtio_scsi)")


def attach_loop(path: Path, *, read_only: bool) -> str:
    """A loop device over `path` (numbers are machine-wide: never assumed); returns /dev/loopN.

    A read-only one with direct I/O, as a guest's disk with cache=none: the loop device sends its
    requests to qemu whole instead of through a second page cache (2 GiB read with `qemu-img convert
    -T none`: about 1.3 s with it, 7 s without, here). A writable one without: on this kernel, writes
    of more than 64 KiB through a direct-I/O loop device over qemu's FUSE export land at the wrong
    offsets (`dd bs=1M oflag=direct` of a filesystem image reads back different; bs=64K, or the loop
    device without direct I/O, reads back the same), so the guest's writes go through its page cache
    and are flushed down to qemu when the disk is unplugged (detach_loop)."""
    direct = "--direct-io=on" if read_only else "--direct-io=off"
    args = ["losetup", "--find", "--show", direct, *(["--read-only"] if read_only else []), str(path)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise DeviceError(f"losetup over {path} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def detach_loop(device: str, *, flush: bool) -> None:
    """Detach a loop device; with `flush`, what the guest wrote reaches qemu first (as a guest's
    buffers are written out before a disk is unplugged)."""
    if flush:
        try:
            fd = os.open(device, os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None:
            try:
                os.fsync(fd)  # the block device's page cache, then a flush down to qemu
            except OSError:
                pass
            finally:
                os.close(fd)
    # A device still open (a reader that did not close it) goes when it is closed (autoclear).
    subprocess.run(["losetup", "--detach", device], capture_output=True)


def refresh_loop(device: str, size: int, timeout: float = 5) -> None:
    """The loop device takes its backing file's new size (a disk extended while plugged). The kernel
    keeps a FUSE file's attributes for a second (qemu's attribute timeout): asked again until seen."""
    deadline = time.monotonic() + timeout
    while True:
        subprocess.run(["losetup", "--set-capacity", device], capture_output=True)
        seen = subprocess.run(["blockdev", "--getsize64", device], capture_output=True, text=True).stdout.strip()
        if seen == str(size) or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def publish_link(state_dir: Path, vm_id: str, name: str, device: str) -> Path:
    link = by_id_dir(state_dir, vm_id) / name
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(device)
    os.replace(tmp, link)  # a reader never sees the link missing or half made
    return link


def loops_under(directory: Path) -> list[str]:
    """The loop devices whose backing file is under `directory` (found by path: a dead FUSE file
    cannot be stat'ed, so `losetup -j` would not find them)."""
    result = subprocess.run(["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    prefix = f"{Path(directory).resolve()}/"
    return [
        d["name"]
        for d in json.loads(result.stdout).get("loopdevices", [])
        if (d.get("back-file") or "").split(" (deleted)")[0].startswith(prefix)
    ]


def mounts_under(directory: Path) -> list[str]:
    """Mount points under `directory` in this mount namespace (FUSE exports, live or dead)."""
    prefix = f"{Path(directory).resolve()}/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            # mountinfo escapes blanks, tabs, newlines and backslashes as octal
            for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(code, char)
            if point.startswith(prefix):
                found.append(point)
    return found


def unmount(point: str) -> None:
    # Lazy: a dead FUSE mount (its qemu killed) answers ENOTCONN to everything but this.
    subprocess.run(["umount", "--lazy", point], capture_output=True)


def cleanup(state_dir: Path) -> list[str]:
    """Remove what a simulator left behind (killed, or stopped without tearing down): loop devices over
    its guests' exports, their FUSE mounts, the published links, transient overlays. Returns what
    it removed."""
    root = guests_dir(state_dir)
    if not root.is_dir():
        return []
    removed = []
    for device in loops_under(root):
        detach_loop(device, flush=False)
        removed.append(device)
    for point in mounts_under(root):
        unmount(point)
        removed.append(point)
    for vm_dir in root.iterdir():
        for sub in ("exports", "transient"):
            shutil.rmtree(vm_dir / sub, ignore_errors=True)
        links = vm_dir / "by-id"
        if links.is_dir():
            for link in links.iterdir():
                link.unlink(missing_ok=True)
    return removed
