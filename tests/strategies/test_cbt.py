"""Backups with change block tracking (VM backups and checkpoints), end to end against ovirtsim.

Each test makes a VM of its own on the demo engine: a small QCOW2 disk with incremental backup
enabled and a small RAW disk without it, running (its disks held by the VM's qemu), and keeps a
reference copy of what the guest wrote, so each point can be compared with the disk's content at
its checkpoint. Writes made while a backup reads its disks must land in the next point only.
"""

import re
import uuid
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

import strategies.cbt as cbt_module
from inventory.models import VM
from inventory.sync import sync_manager
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import (
    backup,
    disks_of,
    restore,
)
from tests.ovirtsim.helpers import add_disk, download, identical, wait_for

# Not inside one test transaction: a job's progress reporter thread writes while its disks move.
pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024**2
OS_SIZE, RAW_SIZE = 24 * MiB, 8 * MiB


class Guest:
    """A running VM of the test's own, and what its disks hold as the guest last wrote them."""

    def __init__(self, sim, conn, vm_id: str, disks: dict[str, types.Disk], *, running: bool):
        self.sim, self.conn, self.vm_id, self.disks, self.running = sim, conn, vm_id, disks, running
        self.content = {alias: bytearray(d.provisioned_size) for alias, d in disks.items()}

    def write(self, alias: str, offset: int, data: bytes) -> None:
        self.sim.guest_write(self.disks[alias].id, offset, data)
        self.content[alias][offset : offset + len(data)] = data

    def save(self, tmp_path: Path, tag) -> dict[str, Path]:
        """The reference copy of every disk now, as raw files."""
        found = {}
        for alias, data in self.content.items():
            found[alias] = tmp_path / f"expected-{tag}-{alias}.raw"
            found[alias].write_bytes(bytes(data))
        return found

    @property
    def service(self):
        return self.conn.system_service().vms_service().vm_service(self.vm_id)


def wait_status(service, status: types.VmStatus) -> None:
    wait_for(lambda: service.get().status == status, timeout=60, what=f"the VM to be {status.value}")


def make_vm(conn, name: str, disks: list[dict], *, run: bool = True) -> types.Vm:
    vms = conn.system_service().vms_service()
    vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
    service = vms.vm_service(vm.id)
    for spec in disks:
        disk = add_disk(conn, sd_name="data-nfs", **spec)
        service.disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=False, active=True
            )
        )
    if run:
        service.start()
        wait_status(service, types.VmStatus.UP)
    return vm


def drop_vm(conn, vm_id: str) -> None:
    service = conn.system_service().vms_service().vm_service(vm_id)
    try:
        if service.get().status != types.VmStatus.DOWN:
            service.stop()
            wait_status(service, types.VmStatus.DOWN)
        service.remove()
    except sdk.NotFoundError:
        pass


@pytest.fixture
def guest(manager, demo_sim, request):
    """A VM of the test's own, running unless the test asks for `down` (indirect parameter)."""
    running = getattr(request, "param", "running") == "running"
    name = f"cbt-{uuid.uuid4().hex[:8]}"
    with demo_sim.connect() as conn:
        vm = make_vm(
            conn,
            name,
            [
                {"name": f"{name}_os", "size": OS_SIZE, "fmt": "cow", "backup": "incremental"},
                {"name": f"{name}_raw", "size": RAW_SIZE, "fmt": "raw"},
            ],
            run=running,
        )
        sync_manager(manager)
        disks = {alias.removeprefix(f"{name}_"): d for alias, d in disks_of(conn, vm.id).items()}
        yield Guest(demo_sim, conn, vm.id, disks, running=running)
        drop_vm(conn, vm.id)


def vm_row(guest) -> VM:
    return VM.objects.get(engine_id=guest.vm_id)


def engine_checkpoints(conn, vm_id) -> list[str]:
    from ovirt.backups import checkpoints

    return [c.id for c in checkpoints(conn, vm_id)]


def assert_clean_cbt(conn, vm_id, point: BackupPoint | None) -> None:
    """No VM backup or image transfer open, and only the checkpoint the point keeps on the engine."""
    backups = conn.system_service().vms_service().vm_service(vm_id).backups_service().list()
    assert all(b.phase in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED) for b in backups), [
        b.phase for b in backups
    ]
    transfers = conn.system_service().image_transfers_service().list()
    assert all(
        t.phase in (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE)
        for t in transfers
    ), [t.phase for t in transfers]
    expected = [point.base_id] if point is not None and point.base_id else []
    assert engine_checkpoints(conn, vm_id) == expected
    assert all(d.status == types.DiskStatus.OK for d in disks_of(conn, vm_id).values())


def point_of(job: Job) -> BackupPoint:
    assert job.status == Job.Status.SUCCEEDED, job.error
    return BackupPoint.objects.get(pk=job.result["point"])


def assert_point_holds(point: BackupPoint, expected: dict[str, Path], guest: Guest) -> None:
    """The point's chain of each disk reads as the reference copy (qemu-img compare)."""
    files = {e.disk_id: point.directory.path / e.file for e in point.manifest().disks}
    for alias, disk in guest.disks.items():
        assert identical(files[disk.id], expected[alias]), (point.pk, alias)


def during_backup(monkeypatch, action) -> None:
    """Do `action()` once the next backup's VM backup is ready, before its first disk is read (the
    guest keeps writing while the backup reads)."""
    real = cbt_module.client.download
    pending = [action]

    def download_after(*args, **kwargs):
        while pending:
            pending.pop()()
        return real(*args, **kwargs)

    monkeypatch.setattr(cbt_module.client, "download", download_after)


def test_it_backs_up_full_then_incrementals_while_the_guest_writes(guest, destination, tmp_path, monkeypatch):
    """Writes made while a backup reads land in the next point; a disk without incremental backup
    is stored whole in each incremental. (Restores of each point, backups of a VM that is down and
    every other outcome all strategies share are in the strategy contract.)"""
    vm = vm_row(guest)
    guest.write("os", 0, b"\x11" * (2 * MiB))
    guest.write("raw", MiB, b"\x12" * MiB)
    rounds = [
        # (writes before the backup, writes while it reads)
        ([], [("os", 4 * MiB, 0x21, MiB)]),
        ([("os", 8 * MiB, 0x31, MiB)], []),
        ([("os", 512 * 1024, 0x41, 64 * 1024), ("raw", 0, 0x42, MiB)], [("os", 16 * MiB, 0x43, MiB)]),
        ([("os", OS_SIZE - MiB, 0x51, MiB)], [("os", 0, 0x52, 4096), ("raw", 2 * MiB, 0x53, 4096)]),
        ([], []),  # nothing changed but the writes made during the last backup
    ]
    points, expected = [], []
    for n, (before, during) in enumerate(rounds):
        for alias, offset, pattern, length in before:
            guest.write(alias, offset, bytes([pattern]) * length)
        expected.append(guest.save(tmp_path, n))
        during_backup(
            monkeypatch,
            lambda during=during: [guest.write(a, o, bytes([p]) * length) for a, o, p, length in during],
        )
        point = point_of(backup(vm, destination, strategy="cbt"))
        points.append(point)
        assert point.base_kind == "checkpoint" and point.base_id, point.note
        assert_clean_cbt(guest.conn, guest.vm_id, point)
        assert_point_holds(point, expected[n], guest)

    assert [p.type for p in points] == ["full"] + ["incremental"] * 4
    # The job says what it backs up in the site's units (core.formats), not "2 disk(s), 96 MiB".
    said = [m for m in points[0].job.events.values_list("message", flat=True) if " backup of " in m]
    assert said and re.fullmatch(r"Full backup of 2 disks, \d+\.\d [KMGT]iB virtual", said[0]), said
    assert [p.parent_id for p in points] == [None] + [p.pk for p in points[:-1]]
    # Only the newest point keeps its checkpoint; older ones were retired on the engine.
    assert list(BackupPoint.objects.filter(vm=vm).with_base().values_list("pk", flat=True)) == [points[-1].pk]
    # An incremental reads what changed (plus the RAW disk, which has no incremental backup, whole).
    for point in points[1:]:
        assert point.bytes_transferred < 8 * MiB, (point.pk, point.bytes_transferred)
        manifest = {e.alias: e for e in point.manifest().disks}
        assert manifest[f"{vm.name}_os"].parent_file is not None
        assert manifest[f"{vm.name}_raw"].parent_file is None  # stored full: it tracks no changes
    job = points[2].job
    assert job.events.filter(message__contains="is stored full in this incremental").exists()


@pytest.mark.parametrize("guest", ["down"], indirect=True)
def test_it_takes_a_full_when_the_checkpoint_is_gone_from_the_engine(guest, destination, tmp_path):
    from ovirt.backups import remove_checkpoint

    vm = vm_row(guest)
    first = point_of(backup(vm, destination, strategy="cbt"))
    remove_checkpoint(guest.conn, guest.vm_id, first.base_id)
    guest.write("os", MiB, b"\x99" * MiB)
    expected = guest.save(tmp_path, "after")
    second = point_of(backup(vm, destination, strategy="cbt", type="incremental"))
    assert second.type == "full" and "is no longer on the engine" in second.note
    assert second.job.events.filter(message__contains="is no longer on the engine").exists()
    assert BackupPoint.objects.get(pk=first.pk).base_id == ""  # never asked for again
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)


@pytest.mark.parametrize("guest", ["down"], indirect=True)
def test_it_takes_a_full_when_the_previous_point_is_damaged(guest, destination, tmp_path):
    vm = vm_row(guest)
    first = point_of(backup(vm, destination, strategy="cbt"))
    (first.directory.path / f"{guest.disks['os'].id}.qcow2").unlink()
    guest.write("os", 0, b"\x95" * MiB)
    expected = guest.save(tmp_path, "damaged")
    second = point_of(backup(vm, destination, strategy="cbt", type="incremental"))
    assert second.type == "full" and f"backup {first.pk} is damaged" in second.note, second.note
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)


@pytest.mark.slow
@pytest.mark.parametrize("guest", ["down"], indirect=True)
def test_it_takes_a_full_in_the_same_job_when_the_checkpoints_bitmap_is_missing(guest, destination, demo_sim, tmp_path):
    """ "Bitmap does not exist": the disk's volume lost the checkpoint's bitmap behind the engine's back."""
    from tests.ovirtsim.helpers import qemu_img

    vm = vm_row(guest)
    first = point_of(backup(vm, destination, strategy="cbt"))
    (volume,) = [
        p
        for p in (demo_sim.state_dir / "storage").glob(f"*/images/{guest.disks['os'].id}/*")
        if p.suffix not in (".meta", ".lease")
    ]
    assert qemu_img("bitmap", "--remove", str(volume), first.base_id).returncode == 0
    guest.write("os", MiB, b"\x91" * MiB)
    expected = guest.save(tmp_path, "lost")
    second = point_of(backup(vm, destination, strategy="cbt", type="incremental"))
    assert second.type == "full" and second.parent is None, second.note
    assert "could not serve the changes of disk" in second.note, second.note
    assert BackupPoint.objects.get(pk=first.pk).base_id == ""  # never asked for again
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)


def test_it_takes_a_full_in_the_same_job_when_qemu_crashed_and_left_the_bitmap_inconsistent(
    guest, destination, demo_sim, tmp_path
):
    vm = vm_row(guest)
    first = point_of(backup(vm, destination, strategy="cbt"))
    guest.write("os", 0, b"\x81" * MiB)
    demo_sim.crash_vm_qemu(guest.vm_id)  # the checkpoint's bitmap was in use: now inconsistent
    guest.write("os", 3 * MiB, b"\x82" * MiB)
    expected = guest.save(tmp_path, "crashed")
    second = point_of(backup(vm, destination, strategy="cbt", type="incremental"))
    assert second.type == "full" and second.parent is None
    assert f"could not back up from checkpoint {first.base_id}" in second.note, second.note
    assert second.job.events.filter(message__contains="could not back up from checkpoint").exists()
    assert BackupPoint.objects.get(pk=first.pk).base_id == ""  # never asked for again
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)
    guest.write("os", 5 * MiB, b"\x83" * MiB)
    expected = guest.save(tmp_path, "next")
    third = point_of(backup(vm, destination, strategy="cbt"))
    assert (third.type, third.parent) == ("incremental", second), third.note
    assert_point_holds(third, expected, guest)


def test_it_takes_a_full_when_a_disk_was_added_after_the_last_checkpoint(guest, destination, tmp_path, manager):
    vm = vm_row(guest)
    point_of(backup(vm, destination, strategy="cbt"))
    added = add_disk(guest.conn, name=f"{vm.name}_added", size=4 * MiB, sd_name="data-nfs", backup="incremental")
    guest.service.disk_attachments_service().add(
        types.DiskAttachment(
            disk=types.Disk(id=added.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=False, active=True
        )
    )
    wait_for(lambda: guest.conn.system_service().disks_service().disk_service(added.id).get().status.value == "ok")
    sync_manager(manager)
    guest.disks["added"] = added
    guest.content["added"] = bytearray(4 * MiB)
    guest.write("added", 0, b"\x55" * MiB)
    guest.write("os", 0, b"\x56" * MiB)
    expected = guest.save(tmp_path, "added")
    second = point_of(backup(vm, destination, strategy="cbt"))
    assert second.type == "full" and "a disk was added" in second.note, second.note
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)
    third = point_of(backup(vm, destination, strategy="cbt"))
    assert third.type == "incremental", third.note


def test_it_waits_out_a_long_finalizing(guest, destination, demo_sim, tmp_path):
    vm = vm_row(guest)
    guest.write("os", 0, b"\x31" * MiB)
    expected = guest.save(tmp_path, 0)
    demo_sim.set_faults(finalize_backup_delay=3.0)
    try:
        point = point_of(backup(vm, destination, strategy="cbt"))
    finally:
        demo_sim.set_faults(finalize_backup_delay=0.0)
    assert point.base_id
    assert_point_holds(point, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, point)


@pytest.mark.parametrize("guest", ["running", "down"], indirect=True)
def test_it_takes_a_full_when_a_disk_was_extended(guest, destination, demo_sim, tmp_path):
    """An extended disk breaks the chain (its size no longer matches the previous point's image):
    the next run is a full that says why, and the chain goes on from it."""
    vm = vm_row(guest)
    guest.write("os", 0, b"\x71" * MiB)
    point_of(backup(vm, destination, strategy="cbt"))
    os_disk = guest.disks["os"]
    attachment = guest.service.disk_attachments_service().attachment_service(os_disk.id)
    attachment.update(types.DiskAttachment(disk=types.Disk(provisioned_size=OS_SIZE + 8 * MiB)))
    service = guest.conn.system_service().disks_service().disk_service(os_disk.id)
    wait_for(lambda: service.get().provisioned_size == OS_SIZE + 8 * MiB and service.get().status.value == "ok")
    guest.content["os"].extend(bytes(8 * MiB))
    guest.write("os", OS_SIZE + 4 * MiB, b"\x72" * MiB)  # past the old end
    guest.write("os", 2 * MiB, b"\x73" * MiB)
    expected = guest.save(tmp_path, "extended")

    second = point_of(backup(vm, destination, strategy="cbt", type="incremental"))
    why = f"disk {os_disk.alias} was extended since the last backup."
    assert (second.type, second.parent) == ("full", None) and why in second.note, second.note
    assert second.job.events.filter(message__contains=why).exists()
    # Quiesced while it runs; a VM that is down was frozen by nobody: cold, not "quiesced".
    consistency = "Filesystem-consistent (quiesced)" if guest.running else "Cold (powered off)"
    assert second.get_consistency_display() == consistency
    assert_point_holds(second, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, second)
    assert BackupPoint.objects.filter(vm=vm).with_base().get() == second  # the old checkpoint is retired

    job = restore(second, f"{vm.name}-extended")
    assert job.status == Job.Status.SUCCEEDED, job.error
    restored_id = job.result["vm_id"]
    try:
        for alias, disk in disks_of(guest.conn, restored_id).items():
            out = tmp_path / f"restored-{alias}.raw"
            download(guest.conn, demo_sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
            assert identical(expected[alias.removeprefix(f"{vm.name}_")], out), alias
    finally:
        guest.conn.system_service().vms_service().vm_service(restored_id).remove()

    guest.write("os", OS_SIZE + 6 * MiB, b"\x74" * MiB)
    expected = guest.save(tmp_path, "after")
    third = point_of(backup(vm, destination, strategy="cbt"))
    assert (third.type, third.parent) == ("incremental", second), third.note
    assert_point_holds(third, expected, guest)
    assert_clean_cbt(guest.conn, guest.vm_id, third)


def test_it_offers_cbt_once_incremental_backup_is_enabled_on_a_disk(manager, demo_sim, client, users):
    """Edit Disk > Enable Incremental Backup on the engine; after the next sync the VM page says the
    disk is ready and the strategy is offered."""
    from django.urls import reverse

    from core import roles
    from strategies.registry import all_strategies

    name = f"cbt-enable-{uuid.uuid4().hex[:6]}"
    with demo_sim.connect() as conn:
        vm = make_vm(conn, name, [{"name": f"{name}_os", "size": 4 * MiB, "fmt": "cow"}], run=False)
        try:
            sync_manager(manager)
            row = VM.objects.get(engine_id=vm.id)
            (disk,) = row.disks.all()
            cbt = all_strategies()["cbt"]
            assert "Incremental backup is not enabled" in disk.incremental_blocker()
            assert cbt.unavailable_reason(row) == "no disk of this VM has incremental backup enabled"

            conn.system_service().disks_service().disk_service(str(disk.engine_id)).update(
                types.Disk(backup=types.DiskBackup.INCREMENTAL)
            )
            sync_manager(manager)
            row = VM.objects.get(pk=row.pk)
            disk.refresh_from_db()
            assert disk.incremental_backup and disk.incremental_blocker() == ""
            assert cbt.unavailable_reason(row) == ""
            client.force_login(users[roles.VIEWER])
            page = client.get(reverse("vm-detail", kwargs={"pk": row.pk})).content.decode()
            assert '<td class="cbt">ready</td>' in page
            assert "Incremental backup is not enabled" not in page
        finally:
            drop_vm(conn, vm.id)
