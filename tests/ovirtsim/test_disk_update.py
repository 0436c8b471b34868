"""Editing a disk (PUT /disks/{id} and through a VM's disk attachment): extend, incremental backup, alias."""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from tests.ovirtsim.helpers import MiB, add_disk, identical, read_bytes, wait_for
from tests.ovirtsim.test_backups import backup_vm, disk_now, download_backup_disk, finalize, vm_service
from tests.ovirtsim.test_data_plane import make_vm


def disk_service(conn, disk_id: str):
    return conn.system_service().disks_service().disk_service(disk_id)


def wait_ok(conn, disk_id: str) -> types.Disk:
    return wait_for(lambda: (d := disk_service(conn, disk_id).get()).status == types.DiskStatus.OK and d, what="ok")


def events_with(conn, code: int) -> list[str]:
    return [e.description for e in conn.system_service().events_service().list() if e.code == code]


def test_it_extends_the_disk_of_a_vm_that_is_down(sim, empty_conn, tmp_path):
    disk = add_disk(empty_conn, name="grow", size=8 * MiB)
    sim.guest_write(disk.id, 0, b"\x01" * MiB)
    make_vm(empty_conn, "down", disks=[disk])
    updated = disk_service(empty_conn, disk.id).update(types.Disk(provisioned_size=2**30))
    assert updated.status == types.DiskStatus.LOCKED
    assert wait_ok(empty_conn, disk.id).provisioned_size == 2**30
    assert events_with(empty_conn, 371) == [
        "Size of the disk 'grow' was successfully updated to 1 GB by admin@internal-authz."
    ]

    # The guest can write past the old end, and what was there is kept.
    sim.guest_write(disk.id, 2**30 - MiB, b"\x02" * MiB)
    disk_now(empty_conn, sim, disk.id, tmp_path / "now.raw")
    assert (tmp_path / "now.raw").stat().st_size == 2**30
    assert read_bytes(tmp_path / "now.raw", 0, MiB) == b"\x01" * MiB
    assert read_bytes(tmp_path / "now.raw", 2**30 - MiB, MiB) == b"\x02" * MiB


def test_it_extends_a_running_disk_live_keeping_its_checkpoint(sim, empty_conn, tmp_path):
    disk = add_disk(empty_conn, name="live", size=8 * MiB, backup="incremental")
    sim.guest_write(disk.id, 0, b"\x01" * MiB)
    vm = make_vm(empty_conn, "up", disks=[disk], status="up")
    full = backup_vm(empty_conn, vm.id, [disk.id])
    download_backup_disk(empty_conn, sim, full, disk.id, tmp_path / "full.qcow2")
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED

    attachment = vm_service(empty_conn, vm.id).disk_attachments_service().attachment_service(disk.id)
    attachment.update(types.DiskAttachment(disk=types.Disk(provisioned_size=16 * MiB)))
    assert wait_ok(empty_conn, disk.id).provisioned_size == 16 * MiB
    assert events_with(empty_conn, 88) == ["VM up live disk was updated by admin@internal-authz."]
    # The running guest sees the new size: it writes past the old end.
    sim.guest_write(disk.id, 12 * MiB, b"\x03" * MiB)

    # qemu grew the checkpoint's bitmap with the disk: the next backup is still incremental,
    # and the full plus its changes is the disk as it is now.
    inc = backup_vm(empty_conn, vm.id, [disk.id], from_checkpoint=full.to_checkpoint_id)
    assert inc.phase == types.BackupPhase.READY
    modes = vm_service(empty_conn, vm.id).backups_service().backup_service(inc.id).disks_service().list()
    assert [d.backup_mode for d in modes] == [types.DiskBackupMode.INCREMENTAL]
    layer = tmp_path / "inc.qcow2"
    download_backup_disk(empty_conn, sim, inc, disk.id, layer, backing_file=tmp_path / "full.qcow2")
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
    vm_service(empty_conn, vm.id).stop()
    wait_for(lambda: vm_service(empty_conn, vm.id).get().status == types.VmStatus.DOWN, what="VM down")
    disk_now(empty_conn, sim, disk.id, tmp_path / "now.raw")
    assert read_bytes(tmp_path / "now.raw", 12 * MiB, MiB) == b"\x03" * MiB
    assert identical(layer, tmp_path / "now.raw")


def test_it_enables_incremental_backup_on_a_qcow2_disk(sim, empty_conn):
    disk = add_disk(empty_conn, name="later", size=8 * MiB)
    assert disk.backup == types.DiskBackup.NONE
    vm = make_vm(empty_conn, "vm", disks=[disk])
    attachment = vm_service(empty_conn, vm.id).disk_attachments_service().attachment_service(disk.id)
    attachment.update(types.DiskAttachment(disk=types.Disk(backup=types.DiskBackup.INCREMENTAL, alias="renamed")))
    edited = disk_service(empty_conn, disk.id).get()
    assert (edited.backup, edited.alias) == (types.DiskBackup.INCREMENTAL, "renamed")
    assert edited.status == types.DiskStatus.OK

    # From now on its backups make checkpoints.
    full = backup_vm(empty_conn, vm.id, [disk.id])
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    checkpoint = vm_service(empty_conn, vm.id).checkpoints_service().checkpoint_service(full.to_checkpoint_id)
    assert [d.id for d in checkpoint.disks_service().list()] == [disk.id]


def fault(call) -> sdk.Error:
    with pytest.raises(sdk.Error) as raised:
        call()
    return raised.value


def test_it_refuses_what_the_engine_refuses(sim, empty_conn):
    cow = add_disk(empty_conn, name="cow", size=16 * MiB)
    raw = add_disk(empty_conn, name="raw", size=8 * MiB, fmt="raw")
    vm = make_vm(empty_conn, "vm", disks=[cow, raw])

    shrink = fault(lambda: disk_service(empty_conn, cow.id).update(types.Disk(provisioned_size=8 * MiB)))
    assert shrink.code == 409
    assert "Cannot edit Virtual Disk. New disk size must be larger than the current disk size." in str(shrink)

    incremental = fault(
        lambda: disk_service(empty_conn, raw.id).update(types.Disk(backup=types.DiskBackup.INCREMENTAL))
    )
    assert incremental.code == 409
    assert "Incremental backup is not supported for RAW format disks." in str(incremental)

    # A disk a VM backup holds is locked.
    backup = backup_vm(empty_conn, vm.id, [cow.id])
    locked = fault(lambda: disk_service(empty_conn, cow.id).update(types.Disk(provisioned_size=32 * MiB)))
    assert "The following disks are locked: cow" in str(locked)
    assert finalize(empty_conn, backup) == types.BackupPhase.SUCCEEDED

    # Nothing was changed by the refusals.
    assert [(d.provisioned_size, d.backup) for d in (disk_service(empty_conn, i).get() for i in (cow.id, raw.id))] == [
        (16 * MiB, types.DiskBackup.NONE),
        (8 * MiB, types.DiskBackup.NONE),
    ]


@pytest.mark.parametrize("status", ["down", "up"])
def test_it_merges_a_snapshot_taken_before_an_extend(sim, empty_conn, tmp_path, status):
    """The snapshot's volume is smaller than the extended active one: the merge grows it first (vdsm's
    "adjust base capacity"), so the checkpoint bitmaps of both can be merged and nothing is cut off."""
    from tests.ovirtsim.test_data_plane import snapshot

    disk = add_disk(empty_conn, name="snapped", size=8 * MiB, backup="incremental")
    sim.guest_write(disk.id, 0, b"\x01" * MiB)
    vm = make_vm(empty_conn, "vm", disks=[disk], status=status)
    full = backup_vm(empty_conn, vm.id, [disk.id])
    download_backup_disk(empty_conn, sim, full, disk.id, tmp_path / "full.qcow2")
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    snap = snapshot(empty_conn, vm.id, "before extend")
    disk_service(empty_conn, disk.id).update(types.Disk(provisioned_size=16 * MiB))
    wait_ok(empty_conn, disk.id)
    sim.guest_write(disk.id, 12 * MiB, b"\x02" * MiB)

    snapshots = vm_service(empty_conn, vm.id).snapshots_service()
    snapshots.snapshot_service(snap.id).remove()
    wait_for(lambda: snap.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    assert wait_ok(empty_conn, disk.id).provisioned_size == 16 * MiB

    inc = backup_vm(empty_conn, vm.id, [disk.id], from_checkpoint=full.to_checkpoint_id)
    assert inc.phase == types.BackupPhase.READY
    layer = tmp_path / "inc.qcow2"
    download_backup_disk(empty_conn, sim, inc, disk.id, layer, backing_file=tmp_path / "full.qcow2")
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
    if status == "up":
        vm_service(empty_conn, vm.id).stop()
        wait_for(lambda: vm_service(empty_conn, vm.id).get().status == types.VmStatus.DOWN, what="VM down")
    disk_now(empty_conn, sim, disk.id, tmp_path / "now.raw")
    assert read_bytes(tmp_path / "now.raw", 12 * MiB, MiB) == b"\x02" * MiB
    assert identical(layer, tmp_path / "now.raw")


def test_it_says_plainly_that_extending_a_block_disk_is_not_simulated(conn):
    (disk,) = conn.system_service().disks_service().list(search="name=db01_data")
    with pytest.raises(sdk.Error) as refused:
        disk_service(conn, disk.id).update(types.Disk(provisioned_size=disk.provisioned_size + 128 * MiB))
    assert refused.value.code == 501
    assert "Extending a disk on a block storage domain is not simulated yet." in str(refused.value)
    assert disk_service(conn, disk.id).get().provisioned_size == disk.provisioned_size
