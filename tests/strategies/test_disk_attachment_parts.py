"""The parts of the disk attachment strategy that run on the proxy's node: finding an attached disk's
device by its serial, and reading it into a sparse RAW file."""

import os
import subprocess
import threading

import pytest

from strategies.disk_attachment.devices import DeviceMissing, device_link, wait_for_device
from strategies.disk_attachment.reader import CHUNK, copy_sparse

DISK_ID = "5f3c1a2b-7d9e-4c1f-8a2b-3c4d5e6f7a8b"
MiB = 1024**2


@pytest.fixture
def device(tmp_path):
    """A read-only loop device over a 64 MiB sparse RAW image with data in a few places (one chunk
    boundary straddled, one block that is data only in its last byte)."""
    image = tmp_path / "disk.raw"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
        for offset, data in ((0, os.urandom(4096)), (CHUNK - 1000, os.urandom(5000)), (40 * MiB - 1, b"\x01")):
            f.seek(offset)
            f.write(data)
    loop = subprocess.run(["losetup", "-f", "--show", "-r", str(image)], capture_output=True, text=True, check=True)
    path = loop.stdout.strip()
    yield image, path
    subprocess.run(["losetup", "-d", path], check=True)


def test_it_reads_a_device_into_an_equal_sparse_raw_file(device, tmp_path):
    image, path = device
    seen = []
    read, written = copy_sparse(path, tmp_path / "out.raw", progress=seen.append)
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), str(tmp_path / "out.raw")])
    assert compare.returncode == 0
    assert read == 64 * MiB and seen[-1] == 64 * MiB and len(seen) == 8
    # Only the 64 KiB blocks holding data were written: the zero areas stay holes.
    assert written == 4 * 64 * 1024
    assert (tmp_path / "out.raw").stat().st_blocks * 512 <= 4 * 64 * 1024


def test_it_stops_when_the_job_is_cancelled_and_leaves_no_thread(device, tmp_path):
    _, path = device
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("cancelled")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="cancelled"):
        copy_sparse(path, tmp_path / "out.raw", check=check)
    assert threading.active_count() == before


def test_it_finds_the_device_by_the_serial_link_the_guest_sees(device, tmp_path):
    _, path = device
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    assert device_link(DISK_ID, "virtio") == "virtio-5f3c1a2b-7d9e-4c1f-8"
    assert device_link(DISK_ID, "virtio_scsi") == "scsi-0QEMU_QEMU_HARDDISK_5f3c1a2b-7d9e-4c1f-8"
    looks = []

    def hot_plug_takes_a_moment(seconds):  # the link appears at the third look, as udev makes it
        looks.append(seconds)
        if len(looks) == 2:
            (by_id / device_link(DISK_ID, "virtio_scsi")).symlink_to(path)

    found = wait_for_device(by_id, DISK_ID, "virtio_scsi", timeout=10, sleep=hot_plug_takes_a_moment)
    assert (str(found), len(looks)) == (path, 2)


def test_it_names_what_it_expected_and_what_it_found_when_no_device_appears(device, tmp_path):
    _, path = device
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "virtio-0000000000000000000").symlink_to(path)
    with pytest.raises(DeviceMissing) as missing:
        wait_for_device(by_id, DISK_ID, "virtio", timeout=0.2)
    assert str(missing.value) == (
        f"Disk {DISK_ID} was attached to the proxy VM, but virtio-5f3c1a2b-7d9e-4c1f-8 did not appear in {by_id} "
        "within 0.2 s (found: virtio-0000000000000000000). Check the proxy's device directory and that its guest "
        "sees virtio disks."
    )
    (by_id / device_link(DISK_ID, "virtio")).symlink_to(tmp_path / "by-id")
    with pytest.raises(DeviceMissing, match="which is not a block device"):
        wait_for_device(by_id, DISK_ID, "virtio", timeout=0.2)
