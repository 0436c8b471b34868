"""Fixtures of the restore tests (tests/recovery/files_helpers.py has the file-level ones' helpers)."""

import pytest

from inventory.models import VM
from recovery.files.disks import close_workdir
from repository.models import BackupPoint, DiskBackup
from tests.helpers import backup


@pytest.fixture
def files_dir(settings, tmp_path):
    """Sessions of this test under its own directory (another test's, in another process, may have
    the same session id); whatever a failed test left open there is closed after it."""
    settings.FILES_DIR = root = tmp_path / "file-sessions"
    yield root
    # A test that failed with a session open: its mounts and processes go now, not with the machine.
    if root.is_dir():
        for workdir in root.iterdir():
            close_workdir(workdir)


@pytest.fixture
def app01_backup(manager, destination, demo_sim, files_dir) -> BackupPoint:
    vm = VM.objects.get(manager=manager, name="app01")
    return BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])


@pytest.fixture
def demo_point(manager, destination) -> BackupPoint:
    """A complete point of the demo engine's app01 as rows (no files: nothing is restored from it),
    for what is checked against the engine before a restore is queued."""
    vm = VM.objects.get(manager=manager, name="app01")
    point = BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer", status="complete")
    for disk in vm.disks.all():
        DiskBackup.objects.create(
            point=point, disk=disk, file=f"{disk.engine_id}.qcow2", virtual_size=disk.provisioned_size
        )
    return point
