"""VM backups and checkpoints (incremental backup), checked with the real SDK, imageio client and qemu-img."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest
from ovirt_imageio import client

from tests.ovirtsim.helpers import (
    MiB,
    add_disk,
    download,
    end_transfer,
    identical,
    qemu_img,
    read_bytes,
    start_transfer,
    wait_for,
)
from tests.ovirtsim.test_data_plane import make_vm


def vm_service(conn, vm_id: str):
    return conn.system_service().vms_service().vm_service(vm_id)


def backup_vm(conn, vm_id: str, disk_ids: list[str], *, from_checkpoint: str | None = None) -> types.Backup:
    """Start a VM backup and wait until it is ready, as `backup_vm.py` does."""
    backups = vm_service(conn, vm_id).backups_service()
    backup = backups.add(types.Backup(disks=[types.Disk(id=d) for d in disk_ids], from_checkpoint_id=from_checkpoint))
    assert backup.phase == types.BackupPhase.INITIALIZING
    service = backups.backup_service(backup.id)
    return wait_for(
        lambda: (b := service.get()).phase in (types.BackupPhase.READY, types.BackupPhase.FAILED) and b,
        what="backup ready",
    )


def finalize(conn, backup: types.Backup) -> types.BackupPhase:
    service = vm_service(conn, backup.vm.id).backups_service().backup_service(backup.id)
    service.finalize()
    return wait_for(
        lambda: (p := service.get().phase) in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED) and p,
        what="backup to end",
    )


def download_backup_disk(conn, sim, backup, disk_id: str, dest, *, backing_file=None) -> None:
    transfer = start_transfer_for_backup(conn, backup, disk_id)
    assert transfer.phase == types.ImageTransferPhase.TRANSFERRING, transfer.phase
    try:
        client.download(
            transfer.transfer_url,
            str(dest),
            sim.ca_file,
            incremental=backing_file is not None,
            backing_file=str(backing_file) if backing_file else None,
            backing_format="qcow2" if backing_file else None,
        )
    finally:
        assert end_transfer(conn, transfer) == types.ImageTransferPhase.FINISHED_SUCCESS


def start_transfer_for_backup(conn, backup, disk_id: str) -> types.ImageTransfer:
    transfers = conn.system_service().image_transfers_service()
    transfer = transfers.add(
        types.ImageTransfer(
            disk=types.Disk(id=disk_id),
            backup=types.Backup(id=backup.id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
    )
    service = transfers.image_transfer_service(transfer.id)
    return wait_for(
        lambda: (t := service.get()).phase != types.ImageTransferPhase.INITIALIZING and t,
        what="transfer to leave initializing",
    )


def disk_now(conn, sim, disk_id: str, dest) -> None:
    """The disk's current content, downloaded by an ordinary image transfer."""
    download(conn, sim.ca_file, dest, disk_id=disk_id, fmt="raw", out_fmt="raw")


@pytest.fixture
def cold_vm(sim, empty_conn):
    """A VM that is down with a QCOW2 disk with incremental backup enabled and a RAW disk."""
    cow = add_disk(empty_conn, name="cbt", size=16 * MiB, backup="incremental")
    raw = add_disk(empty_conn, name="plain", size=8 * MiB, fmt="raw")
    sim.guest_write(cow.id, 0, b"\x01" * MiB)
    sim.guest_write(raw.id, MiB, b"\x02" * MiB)
    vm = make_vm(empty_conn, "cold", disks=[cow, raw])
    return vm, cow, raw


def test_it_backs_up_a_vm_that_is_down_full_then_incremental(sim, empty_conn, cold_vm, tmp_path):
    vm, cow, raw = cold_vm
    full = backup_vm(empty_conn, vm.id, [cow.id, raw.id])
    assert full.phase == types.BackupPhase.READY and full.to_checkpoint_id and full.from_checkpoint_id is None
    disks = vm_service(empty_conn, vm.id).backups_service().backup_service(full.id).disks_service().list()
    full_modes = {cow.id: types.DiskBackupMode.FULL, raw.id: types.DiskBackupMode.FULL}
    assert {d.id: d.backup_mode for d in disks} == full_modes
    disks_now = empty_conn.system_service().disks_service().list()
    assert {(d.status, d.backup_mode) for d in disks_now} == {(types.DiskStatus.LOCKED, types.DiskBackupMode.FULL)}
    for disk in (cow, raw):
        download_backup_disk(empty_conn, sim, full, disk.id, tmp_path / f"full-{disk.id}.qcow2")
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED

    checkpoints = vm_service(empty_conn, vm.id).checkpoints_service().list()
    assert [(c.id, c.parent_id, c.state) for c in checkpoints] == [
        (full.to_checkpoint_id, None, types.CheckpointState.CREATED)
    ]
    disks_of_checkpoint = (
        vm_service(empty_conn, vm.id)
        .checkpoints_service()
        .checkpoint_service(full.to_checkpoint_id)
        .disks_service()
        .list()
    )
    assert [d.id for d in disks_of_checkpoint] == [cow.id]  # only the disk with incremental backup enabled

    sim.guest_write(cow.id, 4 * MiB, b"\x03" * MiB)
    sim.guest_write(raw.id, 4 * MiB, b"\x04" * MiB)
    inc = backup_vm(empty_conn, vm.id, [cow.id, raw.id], from_checkpoint=full.to_checkpoint_id)
    assert inc.from_checkpoint_id == full.to_checkpoint_id and inc.to_checkpoint_id not in (None, full.to_checkpoint_id)
    disks = vm_service(empty_conn, vm.id).backups_service().backup_service(inc.id).disks_service().list()
    modes = {d.id: d.backup_mode for d in disks}
    assert modes == {cow.id: types.DiskBackupMode.INCREMENTAL, raw.id: types.DiskBackupMode.FULL}
    layer = tmp_path / f"inc-{cow.id}.qcow2"
    download_backup_disk(empty_conn, sim, inc, cow.id, layer, backing_file=tmp_path / f"full-{cow.id}.qcow2")
    download_backup_disk(empty_conn, sim, inc, raw.id, tmp_path / f"inc-{raw.id}.qcow2")
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED

    # Only what changed is in the layer; over the full it is the disk as it is now.
    assert int(qemu_img("info", "--output=json", str(layer)).stdout.split('"actual-size": ')[1].split(",")[0]) < 3 * MiB
    for disk, restored in ((cow, layer), (raw, tmp_path / f"inc-{raw.id}.qcow2")):
        disk_now(empty_conn, sim, disk.id, tmp_path / f"now-{disk.id}.raw")
        assert identical(restored, tmp_path / f"now-{disk.id}.raw")
    checkpoints = vm_service(empty_conn, vm.id).checkpoints_service().list()
    assert [(c.id, c.parent_id) for c in checkpoints] == [
        (full.to_checkpoint_id, None),
        (inc.to_checkpoint_id, full.to_checkpoint_id),
    ]
    disks_now = empty_conn.system_service().disks_service().list()
    assert {(d.status, d.backup_mode) for d in disks_now} == {(types.DiskStatus.OK, None)}


def fault_of(call) -> sdk.Error:
    with pytest.raises(sdk.Error) as raised:
        call()
    return raised.value


def volume_bitmaps(sim, disk_id: str) -> set[str]:
    """Every checkpoint bitmap left in the disk's volumes (what a leftover would be)."""
    names = set()
    for volume in (sim.state_dir / "storage").glob(f"*/images/{disk_id}/*"):
        info = json.loads(qemu_img("info", "-U", "--output=json", str(volume)).stdout)
        names |= {b["name"] for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", [])}
    return names


def test_it_refuses_what_the_engine_refuses_during_a_backup(sim, empty_conn, cold_vm):
    vm, cow, raw = cold_vm
    service = vm_service(empty_conn, vm.id)
    backup = backup_vm(empty_conn, vm.id, [cow.id])

    second = fault_of(lambda: service.backups_service().add(types.Backup(disks=[types.Disk(id=raw.id)])))
    assert second.code == 409 and "Cannot backup VM. The VM is during a backup operation." in str(second)
    snap = fault_of(lambda: service.snapshots_service().add(types.Snapshot(description="during")))
    assert snap.code == 409 and "Cannot create Snapshot. The VM is during a backup operation." in str(snap)
    start = fault_of(service.start)
    assert start.code == 409 and "Cannot run VM. The VM is during a backup operation." in str(start)
    checkpoint = fault_of(lambda: service.checkpoints_service().checkpoint_service(backup.to_checkpoint_id).remove())
    assert checkpoint.code == 409
    assert "Cannot remove checkpoint. The VM is during a backup operation." in str(checkpoint)
    ordinary = fault_of(lambda: start_transfer(empty_conn, disk_id=cow.id))
    assert ordinary.code == 409 and "locked" in str(ordinary)
    cow_format = fault_of(
        lambda: (
            empty_conn.system_service()
            .image_transfers_service()
            .add(
                types.ImageTransfer(
                    disk=types.Disk(id=cow.id), backup=types.Backup(id=backup.id), format=types.DiskFormat.COW
                )
            )
        )
    )
    assert cow_format.code == 400 and "The specified format is not applicable for VM backup." in str(cow_format)

    transfer = start_transfer_for_backup(empty_conn, backup, cow.id)
    busy = fault_of(service.backups_service().backup_service(backup.id).finalize)
    assert busy.code == 409 and "There is an active image transfer for VM backup" in str(busy)
    assert end_transfer(empty_conn, transfer) == types.ImageTransferPhase.FINISHED_SUCCESS
    assert finalize(empty_conn, backup) == types.BackupPhase.SUCCEEDED
    again = fault_of(service.backups_service().backup_service(backup.id).finalize)
    assert again.code == 400 and "is already in 'SUCCEEDED' phase" in str(again)
    late = fault_of(lambda: start_transfer_for_backup(empty_conn, backup, cow.id))
    assert late.code == 409 and "The VM backup is not in READY phase, backup phase is SUCCEEDED." in str(late)


def test_it_answers_bad_backup_requests_as_the_engine(sim, empty_conn, cold_vm):
    vm, cow, raw = cold_vm
    backups = vm_service(empty_conn, vm.id).backups_service()
    unknown = "11111111-2222-3333-4444-555555555555"
    bad = fault_of(lambda: backups.add(types.Backup(disks=[types.Disk(id=cow.id)], from_checkpoint_id=unknown)))
    assert bad.code == 400 and f"Cannot backup VM. Checkpoint ID {unknown} doesn't exist." in str(bad)
    bad = fault_of(lambda: backups.add(types.Backup(disks=[types.Disk(id=unknown)])))
    assert bad.code == 400 and f"The following disk(s) ID(s) does not exist: {unknown}" in str(bad)
    other = add_disk(empty_conn, name="loose", size=MiB)
    bad = fault_of(lambda: backups.add(types.Backup(disks=[types.Disk(id=other.id)])))
    assert bad.code == 409 and f"The following disks are not active on VM cold: {other.id}" in str(bad)
    # Nothing was started: no backup, no checkpoint, disks unlocked.
    assert backups.list() == [] and vm_service(empty_conn, vm.id).checkpoints_service().list() == []
    assert empty_conn.system_service().disks_service().disk_service(cow.id).get().status == types.DiskStatus.OK
    missing = fault_of(lambda: backups.backup_service(unknown).get())
    assert missing.code == 404


def test_it_backs_up_a_disk_added_after_the_last_checkpoint_full(sim, empty_conn, cold_vm, tmp_path):
    vm, cow, raw = cold_vm
    full = backup_vm(empty_conn, vm.id, [cow.id])
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    added = add_disk(empty_conn, name="added", size=8 * MiB, backup="incremental")
    sim.guest_write(added.id, 0, b"\x07" * MiB)
    vm_service(empty_conn, vm.id).disk_attachments_service().add(
        types.DiskAttachment(disk=types.Disk(id=added.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
    )
    inc = backup_vm(empty_conn, vm.id, [cow.id, added.id], from_checkpoint=full.to_checkpoint_id)
    disks = vm_service(empty_conn, vm.id).backups_service().backup_service(inc.id).disks_service().list()
    modes = {d.id: d.backup_mode for d in disks}
    assert modes == {cow.id: types.DiskBackupMode.INCREMENTAL, added.id: types.DiskBackupMode.FULL}
    download_backup_disk(empty_conn, sim, inc, added.id, tmp_path / "added.qcow2")
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
    disk_now(empty_conn, sim, added.id, tmp_path / "added-now.raw")
    assert identical(tmp_path / "added.qcow2", tmp_path / "added-now.raw")
    # The new checkpoint covers the added disk: the next incremental is incremental for it too.
    checkpoint = vm_service(empty_conn, vm.id).checkpoints_service().checkpoint_service(inc.to_checkpoint_id)
    assert {d.id for d in checkpoint.disks_service().list()} == {cow.id, added.id}


def test_it_tracks_changes_across_snapshots_and_merges(sim, empty_conn, cold_vm, tmp_path):
    vm, cow, raw = cold_vm
    service = vm_service(empty_conn, vm.id)
    full = backup_vm(empty_conn, vm.id, [cow.id])
    previous = tmp_path / "0.qcow2"
    download_backup_disk(empty_conn, sim, full, cow.id, previous)
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    checkpoint = full.to_checkpoint_id

    def snapshot(description):
        snap = service.snapshots_service().add(types.Snapshot(description=description, persist_memorystate=False))
        one = service.snapshots_service().snapshot_service(snap.id)
        wait_for(lambda: one.get().snapshot_status == types.SnapshotStatus.OK, what="snapshot ok")
        return one

    steps = [
        ("write", 1 * MiB),
        ("snapshot", None),
        ("write", 5 * MiB),
        ("merge", None),
        ("write", 9 * MiB),
    ]
    snap = None
    for n, (step, offset) in enumerate(steps, start=1):
        if step == "snapshot":
            snap = snapshot("between backups")
            continue
        if step == "merge":
            snap.remove()
            wait_for(lambda: len(service.snapshots_service().list()) == 1, what="snapshot merged")
            continue
        sim.guest_write(cow.id, offset, bytes([0x30 + n]) * MiB)
        inc = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=checkpoint)
        layer = tmp_path / f"{n}.qcow2"
        download_backup_disk(empty_conn, sim, inc, cow.id, layer, backing_file=previous)
        assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
        disk_now(empty_conn, sim, cow.id, tmp_path / f"now-{n}.raw")
        assert identical(layer, tmp_path / f"now-{n}.raw"), f"after step {n} ({step} at {offset})"
        previous, checkpoint = layer, inc.to_checkpoint_id


def test_it_removes_checkpoints_and_their_bitmaps(sim, empty_conn, cold_vm):
    vm, cow, raw = cold_vm
    checkpoints = vm_service(empty_conn, vm.id).checkpoints_service()
    ids = []
    for _ in range(3):
        backup = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=ids[-1] if ids else None)
        assert finalize(empty_conn, backup) == types.BackupPhase.SUCCEEDED
        ids.append(backup.to_checkpoint_id)
    assert volume_bitmaps(sim, cow.id) == set(ids)

    # Engine 4.5 removes any checkpoint (4.4.7 lifted the root-only rule): its child takes its parent.
    checkpoints.checkpoint_service(ids[1]).remove()
    assert [(c.id, c.parent_id) for c in checkpoints.list()] == [(ids[0], None), (ids[2], ids[0])]
    checkpoints.checkpoint_service(ids[0]).remove()
    assert [(c.id, c.parent_id) for c in checkpoints.list()] == [(ids[2], None)]
    assert volume_bitmaps(sim, cow.id) == {ids[2]}
    gone = fault_of(lambda: checkpoints.checkpoint_service(ids[0]).get())
    assert gone.code == 404
    events = [e.code for e in empty_conn.system_service().events_service().list(max=20)]
    assert events.count(10797) == 2  # VM_CHECKPOINT_DELETED
    bad = fault_of(
        lambda: (
            vm_service(empty_conn, vm.id)
            .backups_service()
            .add(types.Backup(disks=[types.Disk(id=cow.id)], from_checkpoint_id=ids[0]))
        )
    )
    assert bad.code == 400 and "doesn't exist" in str(bad)


def test_it_stays_in_finalizing_on_the_switch(sim, empty_conn, cold_vm):
    vm, cow, raw = cold_vm
    service = vm_service(empty_conn, vm.id).backups_service()
    backup = backup_vm(empty_conn, vm.id, [cow.id])
    sim.set_faults(finalize_backup_delay=3600)
    service.backup_service(backup.id).finalize()
    assert service.backup_service(backup.id).get().phase == types.BackupPhase.FINALIZING
    # Still the VM's backup: the disk stays locked, another backup cannot start.
    busy = fault_of(lambda: service.add(types.Backup(disks=[types.Disk(id=cow.id)])))
    assert busy.code == 409 and "The following disks are locked: cbt" in str(busy)
    assert service.backup_service(backup.id).get().phase == types.BackupPhase.FINALIZING
    sim.clear_faults()
    wait_for(lambda: service.backup_service(backup.id).get().phase == types.BackupPhase.SUCCEEDED, what="succeeded")
    codes = [e.code for e in empty_conn.system_service().events_service().list(search=backup.id)]
    assert codes == [10793, 10794, 10790]  # succeeded, finalized, started (newest first)


def test_it_fails_backups_in_flight_after_a_restart_and_keeps_checkpoints(tmp_path):
    from ovirtsim import Simulator

    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        cow = add_disk(conn, name="cbt", size=8 * MiB, backup="incremental")
        sim.guest_write(cow.id, 0, b"\x01" * MiB)
        vm = make_vm(conn, "restarted", disks=[cow])
        full = backup_vm(conn, vm.id, [cow.id])
        download_backup_disk(conn, sim, full, cow.id, tmp_path / "full.qcow2")
        assert finalize(conn, full) == types.BackupPhase.SUCCEEDED
        in_flight = backup_vm(conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
        conn.close()
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        service = vm_service(conn, vm.id)
        assert service.backups_service().backup_service(in_flight.id).get().phase == types.BackupPhase.FAILED
        assert "no longer monitored" in conn.system_service().events_service().list(search=in_flight.id)[1].description
        # The failed backup's checkpoint is gone, with its bitmap; the earlier one survived the restart.
        assert [c.id for c in service.checkpoints_service().list()] == [full.to_checkpoint_id]
        assert volume_bitmaps(sim, cow.id) == {full.to_checkpoint_id}
        assert conn.system_service().disks_service().disk_service(cow.id).get().status == types.DiskStatus.OK
        sim.guest_write(cow.id, 2 * MiB, b"\x02" * MiB)
        inc = backup_vm(conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
        download_backup_disk(conn, sim, inc, cow.id, tmp_path / "inc.qcow2", backing_file=tmp_path / "full.qcow2")
        assert finalize(conn, inc) == types.BackupPhase.SUCCEEDED
        disk_now(conn, sim, cow.id, tmp_path / "now.raw")
        assert identical(tmp_path / "inc.qcow2", tmp_path / "now.raw")
        conn.close()


# ----- running VMs: their qemu makes the point-in-time view ------------------------------------


class Guest:
    """What the guest wrote, kept as a raw image beside the engine's disk to compare with."""

    def __init__(self, sim, disk_id: str, path: Path, size: int):
        self.sim, self.disk_id, self.path = sim, disk_id, path
        with open(path, "wb") as f:
            f.truncate(size)

    def write(self, offset: int, data: bytes) -> None:
        self.sim.guest_write(self.disk_id, offset, data)
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def snapshot(self, dest: Path) -> Path:
        shutil.copyfile(self.path, dest)
        return dest


@pytest.fixture
def running_vm(sim, empty_conn, tmp_path):
    cow = add_disk(empty_conn, name="live-cbt", size=16 * MiB, backup="incremental")
    raw = add_disk(empty_conn, name="live-plain", size=8 * MiB, fmt="raw")
    vm = make_vm(empty_conn, "live", disks=[cow, raw], status="up")
    guests = {
        cow.id: Guest(sim, cow.id, tmp_path / "guest-cow.raw", 16 * MiB),
        raw.id: Guest(sim, raw.id, tmp_path / "guest-raw.raw", 8 * MiB),
    }
    guests[cow.id].write(0, b"\x11" * MiB)
    guests[raw.id].write(MiB, b"\x12" * MiB)
    return vm, cow, raw, guests


def test_it_backs_up_a_running_vm_while_the_guest_writes(sim, empty_conn, running_vm, tmp_path):
    vm, cow, raw, guests = running_vm
    full = backup_vm(empty_conn, vm.id, [cow.id, raw.id])
    assert full.phase == types.BackupPhase.READY, full.phase
    at_full = {d: g.snapshot(tmp_path / f"at-full-{d}.raw") for d, g in guests.items()}
    # Writes during the backup do not reach it: they belong to the next one.
    guests[cow.id].write(2 * MiB, b"\x13" * MiB)
    guests[raw.id].write(0, b"\x14" * MiB)
    for disk_id in guests:
        download_backup_disk(empty_conn, sim, full, disk_id, tmp_path / f"full-{disk_id}.qcow2")
        assert identical(tmp_path / f"full-{disk_id}.qcow2", at_full[disk_id])
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED

    guests[cow.id].write(6 * MiB, b"\x15" * MiB)
    previous = tmp_path / f"full-{cow.id}.qcow2"
    checkpoint = full.to_checkpoint_id
    for n in range(2):
        inc = backup_vm(empty_conn, vm.id, [cow.id, raw.id], from_checkpoint=checkpoint)
        assert inc.phase == types.BackupPhase.READY, inc.phase
        at_inc = guests[cow.id].snapshot(tmp_path / f"at-inc{n}.raw")
        guests[cow.id].write((8 + n) * MiB, b"\x16" * MiB)  # during: in the next one
        layer = tmp_path / f"inc{n}-{cow.id}.qcow2"
        download_backup_disk(empty_conn, sim, inc, cow.id, layer, backing_file=previous)
        assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
        assert identical(layer, at_inc), f"incremental {n}"
        previous, checkpoint = layer, inc.to_checkpoint_id
    assert len(vm_service(empty_conn, vm.id).checkpoints_service().list()) == 3


def test_it_fails_a_backup_when_the_vm_stops_during_it(sim, empty_conn, running_vm, tmp_path):
    vm, cow, raw, guests = running_vm
    service = vm_service(empty_conn, vm.id)
    full = backup_vm(empty_conn, vm.id, [cow.id])
    download_backup_disk(empty_conn, sim, full, cow.id, tmp_path / "full.qcow2")
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    guests[cow.id].write(3 * MiB, b"\x21" * MiB)

    inc = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
    transfer = start_transfer_for_backup(empty_conn, inc, cow.id)
    service.stop()
    backup = service.backups_service().backup_service(inc.id)
    assert wait_for(lambda: backup.get().phase == types.BackupPhase.FAILED, what="backup failed")
    transfers = empty_conn.system_service().image_transfers_service()
    assert transfers.image_transfer_service(transfer.id).get().phase == types.ImageTransferPhase.FINISHED_FAILURE
    assert [c.id for c in service.checkpoints_service().list()] == [full.to_checkpoint_id]
    again = fault_of(backup.finalize)
    assert again.code == 400 and "is already in 'FAILED' phase" in str(again)
    assert empty_conn.system_service().disks_service().disk_service(cow.id).get().status == types.DiskStatus.OK

    # The earlier checkpoint still holds: an incremental of the VM now down has the write.
    retry = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
    download_backup_disk(empty_conn, sim, retry, cow.id, tmp_path / "inc.qcow2", backing_file=tmp_path / "full.qcow2")
    assert finalize(empty_conn, retry) == types.BackupPhase.SUCCEEDED
    assert identical(tmp_path / "inc.qcow2", guests[cow.id].path)


def restart(conn, vm_id: str) -> None:
    service = vm_service(conn, vm_id)
    service.stop()
    wait_for(lambda: service.get().status == types.VmStatus.DOWN, what="VM down")
    service.start()
    wait_for(lambda: service.get().status == types.VmStatus.UP, what="VM up")


@pytest.mark.parametrize("stored", [True, False], ids=["bitmap-inconsistent", "bitmap-lost"])
def test_it_needs_a_full_backup_after_the_vms_qemu_crashed(sim, empty_conn, running_vm, tmp_path, stored):
    vm, cow, raw, guests = running_vm
    service = vm_service(empty_conn, vm.id)
    full = backup_vm(empty_conn, vm.id, [cow.id])
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    if stored:
        # qemu writes a new persistent bitmap into the image when it closes it: after a clean
        # restart the checkpoint is on disk, and a crash leaves it in use (inconsistent).
        restart(empty_conn, vm.id)
    # Otherwise the crash loses the checkpoint's bitmap altogether.
    sim.crash_vm_qemu(vm.id)
    guests[cow.id].write(5 * MiB, b"\x31" * MiB)

    inc = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
    assert inc.phase == types.BackupPhase.FAILED
    events = empty_conn.system_service().events_service().list(search=inc.id)
    assert [e.code for e in events][:2] == [10792, 10791]
    assert events[1].description.endswith("failed. Full backup is now needed (User: admin@internal-authz).")
    # The engine dropped the chain: a checkpoint it lost is never offered again.
    assert service.checkpoints_service().list() == []
    assert empty_conn.system_service().disks_service().disk_service(cow.id).get().status == types.DiskStatus.OK
    again = backup_vm(empty_conn, vm.id, [cow.id])
    download_backup_disk(empty_conn, sim, again, cow.id, tmp_path / "full.qcow2")
    assert finalize(empty_conn, again) == types.BackupPhase.SUCCEEDED
    assert identical(tmp_path / "full.qcow2", guests[cow.id].path)
    assert [c.id for c in service.checkpoints_service().list()] == [again.to_checkpoint_id]


def test_it_fails_the_download_of_an_inconsistent_bitmap_of_a_vm_that_is_down(sim, empty_conn, running_vm, tmp_path):
    vm, cow, raw, guests = running_vm
    service = vm_service(empty_conn, vm.id)
    full = backup_vm(empty_conn, vm.id, [cow.id])
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    restart(empty_conn, vm.id)  # the checkpoint is stored in the image
    sim.crash_vm_qemu(vm.id)
    service.stop()
    wait_for(lambda: service.get().status == types.VmStatus.DOWN, what="VM down")
    # A cold backup has no checkpoint redefinition: the backup gets ready, the disk's export fails.
    inc = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
    assert inc.phase == types.BackupPhase.READY
    transfer = start_transfer_for_backup(empty_conn, inc, cow.id)
    assert transfer.phase == types.ImageTransferPhase.FINISHED_FAILURE
    (event,) = [e for e in empty_conn.system_service().events_service().list(max=5) if e.code == 1033]
    assert f"Bitmap '{full.to_checkpoint_id}' is inconsistent" in event.description
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED


def test_it_forgets_a_removed_vms_backups_and_checkpoints(sim, empty_conn, cold_vm):
    vm, cow, raw = cold_vm
    backup = backup_vm(empty_conn, vm.id, [cow.id])
    assert finalize(empty_conn, backup) == types.BackupPhase.SUCCEEDED
    configuration = vm_service(empty_conn, vm.id).get(all_content=True).initialization.configuration
    vm_service(empty_conn, vm.id).remove(detach_only=True)
    # Imported again with the same id (a restore): no checkpoint of the old VM is offered.
    initialization = types.Initialization(configuration=configuration)
    again = (
        empty_conn.system_service()
        .vms_service()
        .add(types.Vm(cluster=types.Cluster(name="Default"), initialization=initialization))
    )
    assert again.id == vm.id
    assert vm_service(empty_conn, vm.id).checkpoints_service().list() == []
    assert vm_service(empty_conn, vm.id).backups_service().list() == []


def test_it_removes_a_running_vms_checkpoint_through_its_qemu(sim, empty_conn, running_vm):
    vm, cow, raw, guests = running_vm
    service = vm_service(empty_conn, vm.id)
    ids = []
    for _ in range(2):
        backup = backup_vm(empty_conn, vm.id, [cow.id], from_checkpoint=ids[-1] if ids else None)
        assert finalize(empty_conn, backup) == types.BackupPhase.SUCCEEDED
        ids.append(backup.to_checkpoint_id)
    service.checkpoints_service().checkpoint_service(ids[0]).remove()
    assert [(c.id, c.parent_id) for c in service.checkpoints_service().list()] == [(ids[1], None)]
    service.stop()
    wait_for(lambda: service.get().status == types.VmStatus.DOWN, what="VM down")
    assert volume_bitmaps(sim, cow.id) == {ids[1]}


# ----- the SDK's own example, unchanged ---------------------------------------------------------

SDK_CACHE = Path(__file__).resolve().parents[2] / "var" / "sdk-examples"


@pytest.fixture(scope="session")
def sdk_examples() -> Path:
    """The examples/ of the installed ovirt-engine-sdk-python's sdist from PyPI (not in the wheel),
    cached under var/; skipped only when PyPI cannot be reached."""
    version = importlib.metadata.version("ovirt-engine-sdk-python")
    examples = SDK_CACHE / version / "examples"
    if (examples / "backup_vm.py").exists():
        return examples
    download_dir = SDK_CACHE / version / "sdist"
    download_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(download_dir),
            f"ovirt-engine-sdk-python=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    sdists = list(download_dir.glob("ovirt_engine_sdk_python-*.tar.gz")) + list(
        download_dir.glob("ovirt-engine-sdk-python-*.tar.gz")
    )
    if result.returncode != 0 or not sdists:
        pytest.skip(f"PyPI is not reachable for the SDK's sdist (its examples): {result.stderr.strip()[-300:]}")
    staging = SDK_CACHE / version / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(sdists[0]) as tar:
        members = [m for m in tar.getmembers() if "/examples/" in m.name]
        tar.extractall(staging, members=members, filter="data")
    (found,) = staging.glob("*/examples")
    found.rename(examples)
    shutil.rmtree(staging)
    return examples


def run_example(examples: Path, sim, home: Path, *args: str) -> str:
    """Run an SDK example as its README says: connection details in ~/.config/ovirt.conf."""
    (home / ".config").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "ovirt.conf").write_text(
        f"[sim]\nengine_url = {sim.url}\nusername = {sim.username}\npassword = {sim.password}\ncafile = {sim.ca_file}\n"
    )
    result = subprocess.run(
        [sys.executable, str(examples / "backup_vm.py"), "-c", "sim", *args],
        capture_output=True,
        text=True,
        cwd=home,
        env={**os.environ, "HOME": str(home)},
        timeout=300,
    )
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_it_runs_the_sdks_backup_example_unchanged(sim, empty_conn, cold_vm, sdk_examples, tmp_path):
    vm, cow, raw = cold_vm
    backups = tmp_path / "backups"
    backups.mkdir()
    out = run_example(sdk_examples, sim, tmp_path, "full", vm.id, "--backup-dir", str(backups))
    (checkpoint,) = re.findall(r"Created checkpoint '([0-9a-f-]+)'", out)
    assert "completed successfully" in out

    sim.guest_write(cow.id, 2 * MiB, b"\x05" * MiB)
    sim.guest_write(raw.id, 3 * MiB, b"\x06" * MiB)
    out = run_example(
        sdk_examples,
        sim,
        tmp_path,
        "incremental",
        vm.id,
        "--backup-dir",
        str(backups),
        "--from-checkpoint-uuid",
        checkpoint,
    )
    (new_checkpoint,) = re.findall(r"Created checkpoint '([0-9a-f-]+)'", out)
    assert f"Incremental backup not available for disk '{raw.id}'" in out

    layer = next(backups.glob(f"*.{new_checkpoint}.{cow.id}.incremental.qcow2"))
    backing = json.loads(qemu_img("info", "--output=json", str(layer)).stdout)["backing-filename"]
    assert backing.startswith(".") is False and f".{checkpoint}.{cow.id}.full.qcow2" in backing
    for disk, restored in ((cow, layer), (raw, next(backups.glob(f"*.{new_checkpoint}.{raw.id}.full.qcow2")))):
        disk_now(empty_conn, sim, disk.id, tmp_path / f"now-{disk.id}.raw")
        assert identical(restored, tmp_path / f"now-{disk.id}.raw")
    assert [b.phase for b in vm_service(empty_conn, vm.id).backups_service().list()] == [
        types.BackupPhase.SUCCEEDED,
        types.BackupPhase.SUCCEEDED,
    ]


@pytest.mark.slow
def test_it_runs_the_sdks_backup_example_on_a_running_vm(sim, empty_conn, running_vm, sdk_examples, tmp_path):
    vm, cow, raw, guests = running_vm
    backups = tmp_path / "backups"
    backups.mkdir()
    out = run_example(sdk_examples, sim, tmp_path, "full", vm.id, "--backup-dir", str(backups))
    (checkpoint,) = re.findall(r"Created checkpoint '([0-9a-f-]+)'", out)
    guests[cow.id].write(7 * MiB, b"\x41" * MiB)
    guests[raw.id].write(5 * MiB, b"\x42" * MiB)
    incremental = ["incremental", vm.id, "--backup-dir", str(backups), "--from-checkpoint-uuid", checkpoint]
    out = run_example(sdk_examples, sim, tmp_path, *incremental)
    (new_checkpoint,) = re.findall(r"Created checkpoint '([0-9a-f-]+)'", out)
    layer = next(backups.glob(f"*.{new_checkpoint}.{cow.id}.incremental.qcow2"))
    assert identical(layer, guests[cow.id].path)
    assert identical(next(backups.glob(f"*.{new_checkpoint}.{raw.id}.full.qcow2")), guests[raw.id].path)


def test_it_seeds_vms_ready_for_incremental_backups(demo_sim, conn, tmp_path):
    vms = conn.system_service().vms_service()
    big = vms.list(search="name=bigdata01", follow="disk_attachments.disk")[0]
    assert [a.disk.backup for a in big.disk_attachments] == [types.DiskBackup.INCREMENTAL]
    db = vms.list(search="name=db01", follow="disk_attachments.disk")[0]
    assert db.status == types.VmStatus.UP
    disks = {a.disk.name: a.disk for a in db.disk_attachments}
    backup = backup_vm(conn, db.id, [d.id for d in disks.values()])
    assert backup.phase == types.BackupPhase.READY
    download_backup_disk(conn, demo_sim, backup, disks["db01_data"].id, tmp_path / "db01_data.qcow2")
    assert read_bytes(tmp_path / "db01_data.qcow2", 40 * MiB, 4 * MiB) == b"\x22" * 4 * MiB  # the seed's pattern
    assert finalize(conn, backup) == types.BackupPhase.SUCCEEDED
    checkpoint = vm_service(conn, db.id).checkpoints_service().checkpoint_service(backup.to_checkpoint_id)
    # Only the QCOW2 disk with incremental backup enabled has a checkpoint; the RAW one is backed up full.
    assert [d.name for d in checkpoint.disks_service().list()] == ["db01_os"]
    checkpoint.remove()  # the demo engine is shared: leave it as it was
    assert vm_service(conn, db.id).checkpoints_service().list() == []


def test_it_serves_a_cold_incremental_as_the_first_export_of_the_engine(sim, empty_conn, tmp_path):
    """The incremental's overlay is made before any qemu-nbd ran (its socket directory did not exist)."""
    disk = add_disk(empty_conn, name="first", size=8 * MiB, backup="incremental")
    vm = make_vm(empty_conn, "first", disks=[disk])
    full = backup_vm(empty_conn, vm.id, [disk.id])
    # Nothing downloaded, nothing written (a guest write to a VM that is down runs a qemu-nbd).
    assert finalize(empty_conn, full) == types.BackupPhase.SUCCEEDED
    inc = backup_vm(empty_conn, vm.id, [disk.id], from_checkpoint=full.to_checkpoint_id)
    download_backup_disk(empty_conn, sim, inc, disk.id, tmp_path / "inc.raw")
    assert finalize(empty_conn, inc) == types.BackupPhase.SUCCEEDED
    assert read_bytes(tmp_path / "inc.raw", 0, MiB) == bytes(MiB)
