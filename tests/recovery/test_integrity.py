"""A corrupt backup never restores silently: every file is checked against its manifest, and a
mismatch fails the restore with the file and both checksums, leaving nothing on the engine."""

import os

import pytest

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import backup, restore, restore_disks

MiB = 1024**2


def flip_bytes(path, offset=None):
    """Flip 16 bytes in the data part of an image (past its QCOW2 metadata)."""
    size = path.stat().st_size
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(16)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate(path):
    os.truncate(path, 500 * 1024)


def zero_header(path):
    with open(path, "r+b") as f:
        f.write(bytes(512))


@pytest.fixture
def engine_state(demo_sim):
    def state():
        with demo_sim.connect() as conn:
            system = conn.system_service()
            return {d.id for d in system.disks_service().list()}, {v.name for v in system.vms_service().list()}

    return state


@pytest.mark.parametrize("damage", [flip_bytes, truncate, zero_header], ids=["flipped", "truncated", "no-header"])
def test_it_refuses_to_restore_a_damaged_image(manager, destination, demo_sim, engine_state, damage):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    (entry,) = point.manifest().disks
    image = point.directory.path / entry.file
    damage(image)
    before = engine_state()

    job = restore(point, f"test01-{damage.__name__}")

    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        f"The backup is damaged: {image} does not match its checksum: expected {entry.checksum}"
    )
    assert "found blake3:" in job.error and job.error.endswith("Nothing was restored.")
    assert engine_state() == before


def test_it_refuses_an_incremental_whose_parent_is_damaged(manager, destination, demo_sim, engine_state):
    vm = VM.objects.get(manager=manager, name="test01")
    full = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    demo_sim.guest_write(str(vm.engine_id), 0, os.urandom(MiB))
    incremental = BackupPoint.objects.get(pk=backup(vm, destination, type="incremental").result["point"])
    assert incremental.parent == full
    (entry,) = full.manifest().disks
    flip_bytes(full.directory.path / entry.file)
    before = engine_state()

    job = restore_disks(incremental, floating=True)

    assert job.status == Job.Status.FAILED
    assert f"{full.directory.path / entry.file} does not match its checksum" in job.error
    assert engine_state() == before
