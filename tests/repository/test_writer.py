"""The point writer: the only way data gets into a destination."""

import blake3
import pytest

from inventory.models import VM, Disk, Manager
from jobs.errors import JobError
from repository.manifest import Manifest, ManifestDisk
from repository.models import BackupDestination, BackupPoint, DiskBackup
from repository.storage import RepositoryError
from repository.writer import PointWriter

GiB = 1024**3


@pytest.fixture
def vm(db):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01")
    Disk.objects.create(manager=manager, vm=vm, engine_id="22222222-2222-2222-2222-222222222222", name="web01_os")
    return vm


@pytest.fixture
def destination(db, destination_dir):
    return BackupDestination.objects.create(name="d", path=str(destination_dir))


def start(vm, destination, **kwargs) -> PointWriter:
    return PointWriter.start(vm=vm, destination=destination, strategy="image_transfer", needed_bytes=0, **kwargs)


def write_disk(writer: PointWriter, data: bytes, parent=None) -> None:
    name = "22222222-2222-2222-2222-222222222222.qcow2"
    writer.part(name).write_bytes(data)
    record, backing = writer.parent_file("22222222-2222-2222-2222-222222222222", name)
    entry = ManifestDisk(
        "22222222-2222-2222-2222-222222222222", "web01_os", "", "qcow2", 1024, 0, "", parent_file=backing
    )
    writer.commit_disk(name, entry=entry, inventory_disk=Disk.objects.get(name="web01_os"), parent=record)


def test_it_writes_a_point_with_its_manifest_last_and_its_rows(vm, destination):
    writer = start(vm, destination)
    writer.write_ovf("<ovf/>")
    write_disk(writer, b"x" * 4096)
    assert not (writer.directory.path / "manifest.json").exists(), "no manifest before the point is complete"
    point = writer.complete(consistency="crash", base_kind="snapshot", base_id="s1", bytes_read=4096)

    assert (point.status, point.base_kind, point.base_id, point.bytes_transferred) == (
        "complete",
        "snapshot",
        "s1",
        4096,
    )
    manifest = Manifest.read(writer.directory.path)
    (disk,) = manifest.disks
    assert disk.checksum == "blake3:" + blake3.blake3(b"x" * 4096).hexdigest()
    assert disk.file == "22222222-2222-2222-2222-222222222222.qcow2" and disk.stored_size > 0
    (row,) = DiskBackup.objects.filter(point=point)
    assert (row.checksum, row.stored_size) == (disk.checksum, disk.stored_size)
    assert point.ovf_checksum == manifest.ovf_checksum == "blake3:" + blake3.blake3(b"<ovf/>").hexdigest()
    assert point.manifest() == manifest

    child = start(vm, destination, parent=point)
    write_disk(child, b"y" * 4096)
    child_point = child.complete(consistency="crash", bytes_read=4096)
    assert child_point.manifest().disks[0].parent_file == f"../{point.uuid}/22222222-2222-2222-2222-222222222222.qcow2"
    assert child_point.disks.get().parent == row
    assert (child_point.base_kind, child_point.manifest().base_kind) == ("", None)


def test_it_refuses_to_start_without_room_and_writes_nothing(vm, destination, destination_dir):
    with pytest.raises(JobError, match=r"Destination d has \d+ MiB free; this backup needs about \d+ MiB"):
        PointWriter.start(vm=vm, destination=destination, strategy="image_transfer", needed_bytes=1024 * 1024 * GiB)
    assert not BackupPoint.objects.exists()
    assert list(destination_dir.iterdir()) == []


def test_it_abandons_a_point_without_a_trace(vm, destination, destination_dir):
    writer = start(vm, destination)
    write_disk(writer, b"x" * 4096)
    writer.abandon()
    assert BackupPoint.objects.get().status == BackupPoint.Status.FAILED
    assert list(destination_dir.glob("*")) == []


def test_it_abandons_a_later_point_and_keeps_the_vms_earlier_ones(vm, destination, destination_dir):
    first = start(vm, destination)
    write_disk(first, b"x" * 4096)
    kept = first.complete(consistency="crash", bytes_read=4096)
    second = start(vm, destination, parent=kept)
    write_disk(second, b"y" * 4096)
    second.abandon()
    assert [p.name for p in destination_dir.glob("*/*")] == [str(kept.uuid)]
    assert Manifest.read(kept.directory.path).disks[0].checksum == "blake3:" + blake3.blake3(b"x" * 4096).hexdigest()


def test_it_flushes_the_disk_files_and_their_renames_before_the_manifest(vm, destination, monkeypatch):
    import os

    flushed = []
    real_fsync = os.fsync

    def fsync(fd):
        flushed.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = start(vm, destination)
    writer.write_ovf("<ovf/>")
    write_disk(writer, b"x" * 4096)
    flushed.clear()
    writer.complete(consistency="crash", bytes_read=4096)

    # The data file, then the point's directory (the rename), then the manifest written last.
    disk, directory = "22222222-2222-2222-2222-222222222222.qcow2", writer.directory.path.name
    assert flushed.index(disk) < flushed.index(directory) < flushed.index(".manifest.json.part")


def test_it_fails_in_words_when_the_destination_cannot_flush_a_file(vm, destination, monkeypatch):
    import errno
    import os

    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".qcow2"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    writer = start(vm, destination)
    writer.write_ovf("<ovf/>")
    write_disk(writer, b"x" * 4096)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(RepositoryError, match=r"Flushing .*\.qcow2 to the destination's disk failed: Input/output"):
        writer.complete(consistency="crash", bytes_read=4096)
    assert not (writer.directory.path / "manifest.json").exists()
