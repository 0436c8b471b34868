"""What a client of a real engine does, written with ovirtsdk4 and ovirt_imageio only."""

import json
import ssl
import subprocess
import tempfile
import time
import urllib.request

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client

MiB = 1024**2


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def add_disk(
    conn,
    *,
    name: str,
    size: int,
    fmt: str = "cow",
    sparse: bool = True,
    sd_name: str = "data",
    backup: str = "none",
    disk_id: str | None = None,
) -> types.Disk:
    disks = conn.system_service().disks_service()
    disk = disks.add(
        types.Disk(
            id=disk_id,
            name=name,
            provisioned_size=size,
            format=types.DiskFormat(fmt),
            sparse=sparse,
            storage_domains=[types.StorageDomain(name=sd_name)],
            backup=types.DiskBackup(backup),
        )
    )
    service = disks.disk_service(disk.id)
    wait_for(lambda: service.get().status == types.DiskStatus.OK, what=f"disk {name} ok")
    return service.get()


def start_transfer(
    conn,
    *,
    disk_id=None,
    snapshot_id=None,
    direction="download",
    fmt="raw",
    shallow=None,
    inactivity_timeout=60,
    timeout_policy=None,
) -> types.ImageTransfer:
    transfers = conn.system_service().image_transfers_service()
    transfer = transfers.add(
        types.ImageTransfer(
            disk=types.Disk(id=disk_id) if disk_id else None,
            snapshot=types.DiskSnapshot(id=snapshot_id) if snapshot_id else None,
            direction=types.ImageTransferDirection(direction),
            format=types.DiskFormat(fmt),
            shallow=shallow,
            inactivity_timeout=inactivity_timeout,
            timeout_policy=types.ImageTransferTimeoutPolicy(timeout_policy) if timeout_policy else None,
        )
    )
    service = transfers.image_transfer_service(transfer.id)
    transfer = wait_for(
        lambda: (t := service.get()).phase != types.ImageTransferPhase.INITIALIZING and t,
        what="transfer to leave initializing",
    )
    return transfer


def end_transfer(conn, transfer, *, cancel: bool = False) -> types.ImageTransferPhase:
    service = conn.system_service().image_transfers_service().image_transfer_service(transfer.id)
    service.cancel() if cancel else service.finalize()

    def ended():
        try:
            phase = service.get().phase
        except sdk.NotFoundError:
            return "gone"
        return (
            phase
            if phase in (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE)
            else None
        )

    return wait_for(ended, what="transfer to end")


def download(conn, ca_file: str, dest, **kwargs) -> None:
    fmt = kwargs.pop("out_fmt", "qcow2")
    backing = kwargs.pop("backing_file", None)
    transfer = start_transfer(conn, **kwargs)
    assert transfer.phase == types.ImageTransferPhase.TRANSFERRING, transfer.phase
    try:
        client.download(
            transfer.transfer_url,
            str(dest),
            ca_file,
            fmt=fmt,
            backing_file=backing,
            backing_format="qcow2" if backing else None,
        )
    finally:
        assert end_transfer(conn, transfer) == types.ImageTransferPhase.FINISHED_SUCCESS


def upload(conn, ca_file: str, src, *, disk_id: str, fmt: str = "raw") -> None:
    transfer = start_transfer(conn, disk_id=disk_id, direction="upload", fmt=fmt)
    assert transfer.phase == types.ImageTransferPhase.TRANSFERRING, transfer.phase
    try:
        client.upload(str(src), transfer.transfer_url, ca_file)
    finally:
        assert end_transfer(conn, transfer) == types.ImageTransferPhase.FINISHED_SUCCESS


def remote_checksum(transfer_url: str, ca_file: str) -> dict:
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(transfer_url + "/checksum", context=context) as response:
        return json.load(response)


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def identical(a, b) -> bool:
    result = qemu_img("compare", str(a), str(b))
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def make_image(path, *, size: int, writes: list[tuple[int, int, int]], fmt: str = "qcow2") -> None:
    """An image with recognizable data: (pattern, offset, length) per write."""
    assert qemu_img("create", "-q", "-f", fmt, str(path), str(size)).returncode == 0
    args = ["qemu-io", "-f", fmt]
    for pattern, offset, length in writes:
        args += ["-c", f"write -P {pattern} {offset} {length}"]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def read_bytes(path, offset: int, length: int) -> bytes:
    """Guest-visible bytes of an image (any format, through its backing chain), read through qemu."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = f"{tmp}/image.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), raw], check=True, capture_output=True)
        with open(raw, "rb") as f:
            f.seek(offset)
            return f.read(length)
