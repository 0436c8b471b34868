"""Restores: whole VMs from their OVF, single disks, replacing a VM; and what a dead restore leaves."""

import ovirtsdk4.types as types
import pytest

from core import roles
from inventory.models import VM
from jobs.models import Job
from ovirt.snapshots import remove_snapshot
from recovery.restore import request_restore
from repository.models import BackupPoint
from tests.helpers import (
    assert_clean_engine,
    backup,
    disks_of,
    engine_snapshots,
    kill_worker_mid_transfer,
    reseal_ovf,
    restore,
    restore_disks,
)
from tests.ovirtsim.helpers import download, identical

MiB = 1024**2


def test_it_refuses_to_restore_over_an_existing_vm(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    job = restore(point, "web01")
    assert job.status == Job.Status.FAILED and "replaces a VM only when asked" in job.error


def test_it_refuses_a_restore_of_a_damaged_backup(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    next(point.directory.path.glob("*.qcow2")).unlink()
    job = restore(point, "test01-restored")
    assert job.status == Job.Status.FAILED and "is missing" in job.error


@pytest.mark.parametrize("transfer", ["imageio", "ssh"])
def test_it_checks_the_stored_files_while_the_data_moves_and_finalizes_no_disk_that_differs(
    ssh_manager, destination, demo_sim, transfer
):
    """A stored image changed after its backup (its chain still whole, so nothing stops the restore
    up front): its checksum is taken while it is uploaded, and the disk is not finalized but removed,
    the job naming the file and both checksums."""
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    image = next(point.directory.path.glob("*.qcow2"))
    with open(image, "ab") as f:  # past the image's end: qemu still reads the same disk from it
        f.write(b"\0" * 512)
    with demo_sim.connect() as conn:
        disks = conn.system_service().disks_service()
        before = {d.id for d in disks.list()}
        job = restore_disks(point, floating=True, transfer=transfer)
        assert job.status == Job.Status.FAILED
        assert str(image) in job.error and job.error.count("blake3:") == 2, job.error
        assert "was not finalized and is removed" in job.error
        assert job.bytes_done > 0, "the data moved before the mismatch was found"
        assert {d.id for d in disks.list()} == before


@pytest.mark.django_db(transaction=True)  # the job is enqueued on commit, so --wait sees it run
def test_it_restores_disks_and_replaces_vms_from_the_command_line(manager, destination, demo_sim, settings):
    import io

    from django.core.management import call_command

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    vm = VM.objects.get(manager=manager, name="test01")
    point = str(backup(vm, destination, type="full").result["point"])

    def restore_cli(*args) -> str:
        out = io.StringIO()
        call_command("restore", point, *args, "--wait", stdout=out)
        return out.getvalue().split()[-1]  # the new disk's or VM's engine id

    with demo_sim.connect() as conn:
        system = conn.system_service()
        disk_id = restore_cli("--disk", "test01_os", "--floating", "--allocation", "preallocated")
        disk = system.disks_service().disk_service(disk_id).get()
        assert disk.sparse is False and disk.vms is None
        system.disks_service().disk_service(disk_id).remove()

        first = restore_cli("--name", "test01-cli")
        second = restore_cli("--name", "test01-cli", "--replace")
        assert [v.id for v in system.vms_service().list(search="name=test01-cli")] == [second] != [first]
        system.vms_service().vm_service(second).remove()


@pytest.mark.django_db(transaction=True)
def test_it_undoes_what_a_killed_restore_made(manager, destination, demo_sim):
    """A worker killed -9 while uploading a restored disk: the reaper fails the job, cancels the
    transfer and removes the disk it had created; no VM of that name appears."""
    from jobs.tasks import reap_abandoned_jobs

    vm = VM.objects.get(manager=manager, name="bigdata01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    with demo_sim.connect() as conn:
        if point.base_id:
            remove_snapshot(conn, str(vm.engine_id), point.base_id)
        disks = conn.system_service().disks_service()
        before = {d.id for d in disks.list()}
        job = request_restore(point=point, origin="cli", name="bigdata01-killed")
        kill_worker_mid_transfer(job)
        job.refresh_from_db()
        (made,) = [o["id"] for o in job.engine_objects if o["kind"] == "disk"]
        assert made in {d.id for d in disks.list()}
        assert any(t.disk.id == made for t in conn.system_service().image_transfers_service().list() if t.disk)

        assert reap_abandoned_jobs(timeout_seconds=0) == 1
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED, job.error
        assert "Undone on the engine: " in job.error and f"disk bigdata01_data ({made})" in job.error, job.error
        assert job.events.filter(message__startswith="Cancelling image transfer").exists()
        assert {d.id for d in disks.list()} == before
        assert conn.system_service().vms_service().list(search="name=bigdata01-killed") == []
        open_phases = {types.ImageTransferPhase.TRANSFERRING, types.ImageTransferPhase.INITIALIZING}
        assert not [t for t in conn.system_service().image_transfers_service().list() if t.phase in open_phases]


def test_it_undoes_a_recorded_vm_and_gives_a_renamed_vm_its_name_back(manager, demo_sim):
    from ovirt.leftovers import undo_engine_objects
    from ovirt.snapshots import create_snapshot
    from tests.ovirtsim.helpers import start_transfer

    with demo_sim.connect() as conn:
        vms = conn.system_service().vms_service()
        old = vms.list(search="name=test01")[0]
        vms.vm_service(old.id).update(types.Vm(name="test01-replaced-by-job-0"))
        new = vms.add(types.Vm(name="test01", cluster=types.Cluster(name="Development"), memory=2**30))
        floating = (
            conn.system_service()
            .disks_service()
            .add(
                types.Disk(
                    name="undo-me",
                    format=types.DiskFormat.COW,
                    provisioned_size=MiB,
                    storage_domains=[types.StorageDomain(name="data-nfs")],
                )
            )
        )
        from tests.ovirtsim.helpers import wait_for

        disk_service = conn.system_service().disks_service().disk_service(floating.id)
        wait_for(lambda: disk_service.get().status == types.DiskStatus.OK, what="disk created")
        # What a dead backup leaves: its snapshot, and a transfer open on one of the VM's disks.
        others = {s.id for s in engine_snapshots(conn, old.id)}  # kept by other tests' backups of test01
        taken = create_snapshot(conn, old.id, description="dead worker", quiesce=False)[0]
        old_disk = next(iter(disks_of(conn, old.id).values()))
        transfer = start_transfer(conn, disk_id=old_disk.id)
        objects = [
            {"kind": "snapshot", "id": taken.id, "vm": old.id, "name": "dead worker"},
            {"kind": "transfer", "id": transfer.id},
            {"kind": "disk", "id": floating.id, "name": "undo-me"},
            {"kind": "renamed_vm", "id": old.id, "name": "test01"},
            {"kind": "vm", "id": new.id, "name": "test01"},
            {"kind": "disk", "id": "00000000-0000-0000-0000-000000000000", "name": "gone already"},
        ]
        assert undo_engine_objects(conn, objects) == []
        ended = conn.system_service().image_transfers_service().image_transfer_service(transfer.id).get()
        assert ended.phase not in (types.ImageTransferPhase.TRANSFERRING, types.ImageTransferPhase.INITIALIZING)
        assert_clean_engine(conn, old.id, others)
        (back,) = vms.list(search="name=test01")
        assert back.id == old.id
        assert vms.list(search="name=test01-replaced-by-job-0") == []
        assert floating.id not in {d.id for d in conn.system_service().disks_service().list()}


def test_it_restores_single_disks_floating_or_into_a_vm(manager, destination, demo_sim, tmp_path, client, users):
    vm = VM.objects.get(manager=manager, name="app01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    floating = restore_disks(point, disks=["app01_disk2"], floating=True, allocation="preallocated")
    assert floating.status == Job.Status.SUCCEEDED, floating.error
    (new_id,) = floating.result["disks"].values()
    # The job says what it made and where, by name and id: what an admin finds the disk by in oVirt.
    assert floating.name == "app01 -> 1 disk, floating"
    assert floating.result["disk_names"] == {new_id: "app01_disk2"} and floating.result["attached_to"] == ""
    client.force_login(users[roles.VIEWER])
    page = client.get(f"/jobs/{floating.pk}/").content.decode()
    assert f"Restored 1 disk, floating: app01_disk2 <small>({new_id})</small>." in page
    assert "Restored as VM" not in page
    with demo_sim.connect() as conn:
        disks = conn.system_service().disks_service()
        disk = disks.disk_service(new_id).get()
        assert disk.sparse is False and disk.vms is None
        # The engine preallocates a QCOW2 disk only with incremental backup, which it did not have.
        assert disk.format == types.DiskFormat.RAW
        assert floating.events.filter(message__contains="restoring it as a preallocated RAW disk").exists()
        out = tmp_path / "floating.raw"
        download(conn, demo_sim.ca_file, out, disk_id=new_id, fmt="raw", out_fmt="raw")
        source = point.directory.path / f"{next(iter(floating.result['disks']))}.qcow2"
        assert identical(source, out)
        disks.disk_service(new_id).remove()

        target = conn.system_service().vms_service().list(search="name=test01")[0]
        before = len(disks_of(conn, target.id))
        attached = restore_disks(point, disks=["app01_disk3"], attach_to="test01")
        assert attached.status == Job.Status.SUCCEEDED, attached.error
        assert len(disks_of(conn, target.id)) == before + 1
        (new_id,) = attached.result["disks"].values()
        assert attached.name == "app01 -> 1 disk, attached to VM test01"
        assert (attached.result["attached_to"], attached.result["attached_to_id"]) == ("test01", target.id)
        page = client.get(f"/jobs/{attached.pk}/").content.decode()
        assert f"Restored 1 disk, attached to VM test01: app01_disk3 <small>({new_id})</small>." in page
        conn.system_service().vms_service().vm_service(target.id).disk_attachments_service().attachment_service(
            new_id
        ).remove(detach_only=False)


def test_it_replaces_an_existing_vm_only_when_asked_and_only_after_the_upload(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    first = restore(point, "test01-copy")
    assert first.status == Job.Status.SUCCEEDED, first.error
    refused = restore(point, "test01-copy")
    assert refused.status == Job.Status.FAILED and "only when asked" in refused.error
    replaced = restore(point, "test01-copy", replace=True)
    assert replaced.status == Job.Status.SUCCEEDED, replaced.error
    with demo_sim.connect() as conn:
        copies = conn.system_service().vms_service().list(search="name=test01-copy")
        assert [c.id for c in copies] == [replaced.result["vm_id"]] != [first.result["vm_id"]]
        conn.system_service().vms_service().vm_service(copies[0].id).remove()


def test_it_keeps_the_vm_it_was_to_replace_when_the_restore_fails(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    first = restore(point, "test01-keep")
    assert first.status == Job.Status.SUCCEEDED, first.error
    reseal_ovf(point, b"<Envelope/>")  # sound as a file, refused by the engine: the failure comes after the upload
    with demo_sim.connect() as conn:
        disks_before = {d.id for d in conn.system_service().disks_service().list(search="name=test01_os")}
    failed = restore(point, "test01-keep", replace=True, cluster="Development")
    assert failed.status == Job.Status.FAILED and "Failed to parse the OVF" in failed.error
    with demo_sim.connect() as conn:
        vms = conn.system_service().vms_service()
        kept = vms.list(search="name=test01-keep")
        assert [v.id for v in kept] == [first.result["vm_id"]]
        assert len(disks_of(conn, kept[0].id)) == 1
        # The disk the failed restore uploaded is removed again.
        assert {d.id for d in conn.system_service().disks_service().list(search="name=test01_os")} == disks_before
        vms.vm_service(kept[0].id).remove()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transfer", ["ssh", "imageio"])
def test_it_cancels_a_restore_mid_write_and_leaves_nothing_behind(ssh_manager, destination, demo_sim, transfer):
    """Cancelled while writing a disk's gigabyte, over SSH (qemu-nbd on the host) or through imageio:
    the job ends cancelled, the VM and disks it made are removed, nothing keeps writing."""
    from tests.helpers import processes_using, run_job_doing_once_data_moves
    from tests.ovirtsim.helpers import wait_for

    vm = VM.objects.get(manager=ssh_manager, name="bigdata01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full", strategy="ssh_transfer").result["point"])
    name = f"bigdata01-cancelled-{transfer}"
    with demo_sim.connect() as conn:
        remove_snapshot(conn, str(vm.engine_id), point.base_id)
        disks = conn.system_service().disks_service()
        before = {d.id for d in disks.list()}
        made, writers = set(), []

        def cancel() -> None:
            made.update({d.id for d in disks.list()} - before)
            writers.extend(pid for disk_id in made for pid in processes_using(disk_id))
            Job.objects.get(pk=job.pk).request_cancel()

        job = request_restore(point=point, origin="cli", name=name, transfer=transfer)
        run_job_doing_once_data_moves(job, cancel)
        job.refresh_from_db()
        assert job.status == Job.Status.CANCELLED, (job.status, job.error)
        assert job.params["transfer"] == transfer
        assert made, "the restore had made its disk when it was cancelled"
        if transfer == "ssh":
            assert writers, "qemu-nbd on the host was writing the volume when the cancel came"
        assert conn.system_service().vms_service().list(search=f"name={name}") == []
        wait_for(lambda: {d.id for d in disks.list()} - before == set(), what="the restored disk to be removed")
        transfers = conn.system_service().image_transfers_service().list()
        open_phases = {types.ImageTransferPhase.TRANSFERRING, types.ImageTransferPhase.INITIALIZING}
        assert not [t for t in transfers if t.phase in open_phases and t.disk and t.disk.id in made]
    # Nothing writes into the removed volumes any more (qemu-nbd names its volume's path).
    wait_for(lambda: not any(processes_using(disk_id) for disk_id in made), what="the writers to end")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_record_of_a_disk_left_when_the_engine_dies_mid_upload_and_removes_it_later(tmp_path, destination):
    """The engine is killed while a restored disk uploads: the job fails saying which disk is left on
    the engine (by name and id) and keeps its record; once the engine is back, the reaper removes
    the disk, and nothing of the restore is left."""
    from inventory.sync import sync_manager
    from jobs.tasks import reap_abandoned_jobs
    from ovirtsim import Simulator
    from tests.conftest import free_port, register_manager
    from tests.helpers import run_job_doing_once_data_moves

    sim = Simulator(tmp_path / "engine", seed="demo", port=free_port()).start()
    try:
        manager = register_manager(sim, name="crashing")
        sync_manager(manager)
        vm = VM.objects.get(manager=manager, name="bigdata01")
        point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
        with sim.connect() as conn:
            before = {d.id for d in conn.system_service().disks_service().list()}
        job = request_restore(point=point, origin="cli", name="bigdata01-crashed")
        run_job_doing_once_data_moves(job, sim.kill)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED
        (left,) = [o for o in job.engine_objects if o["kind"] == "disk"]
        assert left["name"] == "bigdata01_data"
        said = f"disk bigdata01_data ({left['id']})"
        assert said in job.error, job.error
        assert job.error.startswith(f"The engine at {sim.url} stopped answering while uploading disk bigdata01_data")
        assert "pycurl" not in job.error and "<" not in job.error
        assert job.events.filter(level="error", message__contains=said).exists()

        sim.start()
        reap_abandoned_jobs(timeout_seconds=0)
        job.refresh_from_db()
        assert job.engine_objects == []
        assert job.events.filter(message__startswith=f"Removed disk bigdata01_data ({left['id']})").exists()
        with sim.connect() as conn:
            assert {d.id for d in conn.system_service().disks_service().list()} == before
            assert conn.system_service().vms_service().list(search="name=bigdata01-crashed") == []
    finally:
        sim.stop()
