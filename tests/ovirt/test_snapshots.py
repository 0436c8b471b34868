"""The engine client's snapshot steps against ovirtsim: the engine failing, or refusing while busy."""

import json
import threading

import ovirtsdk4.types as types
import pytest

from jobs.models import Job
from ovirt.errors import EngineError
from ovirt.snapshots import SNAPSHOT_PREFIX, create_snapshot, remove_snapshot
from ovirt.vms import remove_vm
from ovirtsim import Simulator
from tests.ovirtsim.helpers import add_disk, end_transfer, qemu_img, start_transfer
from tests.ovirtsim.test_data_plane import make_vm

MiB = 1024**2


def test_it_tells_a_failed_merge_instead_of_waiting_for_the_snapshot_to_go(tmp_path):
    """The engine unlocks a snapshot whose merge failed and keeps it: waiting for it to go would wait
    the whole hour the merge is given."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            disk = add_disk(conn, name="m_os", size=16 * MiB)
            vm = make_vm(conn, "m", disks=[disk])
            snap, *_ = create_snapshot(conn, vm.id, description="merge fails", quiesce=False)
            (base,) = [
                p
                for p in (sim.state_dir / "storage").glob(f"*/images/{disk.id}/*")
                if p.suffix not in (".meta", ".lease")
                and "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(p)).stdout)
            ]
            # Behind the engine's back the base now needs a volume that is not there: the merge, which
            # opens the whole chain, fails.
            qemu_img("rebase", "-u", "-f", "qcow2", "-b", "not-there", "-F", "qcow2", str(base))
            with pytest.raises(EngineError) as failure:
                remove_snapshot(conn, vm.id, snap.id)
            name = f"{SNAPSHOT_PREFIX}: merge fails"
            assert str(failure.value).startswith(
                f"The engine could not remove snapshot '{name}' ({snap.id}): Failed to delete snapshot '{name}' for VM "
            ), failure.value
            assert "The snapshot is still there. Disk m_os is illegal now" in str(failure.value)
            snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
            assert snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK
        finally:
            conn.close()


@pytest.mark.django_db
def test_it_retries_what_the_engine_refuses_while_busy_and_not_what_waiting_cannot_cure(tmp_path, settings):
    """A locked disk is waited out; a running VM is not (it used to cost half a minute of retries
    told as "the engine answered busy"). The VMs' names hold words of lasting refusals: the
    engine's messages name them, and must not be taken for the reason."""
    settings.ENGINE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)  # the service's own: the lock lasts 1.5 s
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            job = Job.objects.create(kind="backup", name="freezer")
            running = make_vm(conn, "freezer", disks=[add_disk(conn, name="freezer_os", size=16 * MiB)], status="up")
            with pytest.raises(EngineError, match="is running"):
                remove_vm(conn, running.id, name="freezer", job=job)
            assert not job.events.filter(message__contains="retrying").exists()

            disk = add_disk(conn, name="illegal-running_os", size=16 * MiB)
            down = make_vm(conn, "illegal-running", disks=[disk])
            # The disk is locked by an image transfer until a moment after the first refusal.
            transfer = start_transfer(conn, disk_id=disk.id)

            def cancel() -> None:
                own = sim.connect()  # a connection is not shared between threads
                try:
                    end_transfer(own, transfer, cancel=True)
                finally:
                    own.close()

            release = threading.Timer(1.5, cancel)
            release.start()
            try:
                remove_vm(conn, down.id, name="illegal-running", job=job)
            finally:
                release.join()
            busy = job.events.filter(message__contains="the engine answered busy")
            assert busy.exists() and "is locked" in busy.first().message
            assert conn.system_service().vms_service().list(search="name=illegal-running") == []
        finally:
            conn.close()


@pytest.mark.django_db
def test_it_takes_a_crash_consistent_snapshot_when_the_engine_fails_the_quiesced_one_later(tmp_path):
    """The engine accepts a quiesced snapshot, then fails it when the guest's freeze does not return:
    the snapshot is gone and its id is the Active VM's again (the engine lent it), which reads `ok`."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            job = Job.objects.create(kind="backup", name="hung")
            vm = make_vm(conn, "hung", disks=[add_disk(conn, name="hung_os", size=16 * MiB)], status="up")
            snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
            (active,) = snapshots.list()
            sim.set_guest_agent(vm.id, running=True, freeze_hangs=True)

            snap, consistency, why = create_snapshot(conn, vm.id, description="hung", quiesce=True, job=job)

            assert consistency == "crash"
            assert why.startswith("Crash-consistent, not quiesced: the engine accepted the quiesced snapshot, then ")
            assert "Failed to create live snapshot 'ovirt-backup: hung' for VM 'hung' due to: Unable to freeze" in why
            warned = job.events.filter(level="warning", message__startswith="Quiescing failed (the engine accepted")
            assert warned.exists()
            # The failed one gave the Active VM its id back, and the crash-consistent one took it in turn.
            assert snap.id == active.id
            listed = sorted((s.snapshot_type.value, s.id == snap.id) for s in snapshots.list())
            assert listed == [("active", False), ("regular", True)]
            assert [o["id"] for o in job.engine_objects] == [snap.id]

            # A snapshot the engine fails for another reason is not taken again: the backup fails.
            sim.set_guest_agent(vm.id, running=True)
            sim.set_faults(fail_next_snapshot=True)
            with pytest.raises(EngineError, match="The engine failed to create the snapshot: Failed to complete"):
                create_snapshot(conn, vm.id, description="fails", quiesce=True, job=job)
            assert len(snapshots.list()) == 2
            # A record of a snapshot whose id went back to the Active VM (a worker that died while the
            # engine failed it) is of nothing left: the reaper's removal drops it.
            (lent,) = [s for s in snapshots.list() if s.snapshot_type == types.SnapshotType.ACTIVE]
            job.remember_engine_object("snapshot", lent.id, vm=vm.id)
            remove_snapshot(conn, vm.id, lent.id, job=job)
            assert [o["id"] for o in job.engine_objects] == [snap.id]
        finally:
            conn.close()


@pytest.mark.django_db
def test_it_asks_again_when_the_engine_fails_to_answer_and_never_takes_two_snapshots(manager, demo_sim):
    """An engine answering 500 or 503 (its web server's page while it restarts) is asked again, under
    the same bounded policy as a busy one: a read, a snapshot removal (a cleanup step), a snapshot
    whose request failed before the engine acted. A snapshot the engine took before its answer was
    lost is adopted, not taken twice."""
    from ovirt.connection import connect
    from ovirt.vms import vm_service

    job = Job.objects.create(kind="backup", name="retried")
    with demo_sim.connect() as conn:
        disk = add_disk(conn, name="retried_os", size=16 * MiB, sd_name="data-nfs")
        vms = conn.system_service().vms_service()
        vm = vms.add(types.Vm(name="retried", cluster=types.Cluster(name="Production")))
        vms.vm_service(vm.id).disk_attachments_service().add(
            types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
        )
    snapshots_path = f"/vms/{vm.id}/snapshots"
    try:
        with connect(manager) as connection:
            demo_sim.set_faults(fail_requests={"times": 2, "status": 503, "methods": ["GET"], "path": f"/vms/{vm.id}$"})
            assert vm_service(connection, vm.id).get().name == "retried"

            taken = []
            for status, after in ((500, False), (503, True)):
                demo_sim.set_faults(
                    fail_requests={
                        "times": 1,
                        "status": status,
                        "methods": ["POST"],
                        "path": f"{snapshots_path}$",
                        "after": after,
                    }
                )
                snap, _, _ = create_snapshot(connection, vm.id, description=f"answer {status}", quiesce=False, job=job)
                taken.append(snap.id)
            ours = [s for s in vm_service(connection, vm.id).snapshots_service().list() if s.id != vm.id]
            assert sorted(s.description for s in ours if s.description.startswith(SNAPSHOT_PREFIX)) == [
                f"{SNAPSHOT_PREFIX}: answer 500",
                f"{SNAPSHOT_PREFIX}: answer 503",
            ]
            assert {o["id"] for o in Job.objects.get(pk=job.pk).engine_objects} == set(taken)

            for snap_id in taken:
                demo_sim.set_faults(fail_requests={"times": 1, "status": 503, "methods": ["DELETE"]})
                remove_snapshot(connection, vm.id, snap_id, job=job)
            left = [s.id for s in vm_service(connection, vm.id).snapshots_service().list()]
            assert not set(taken) & set(left)
            assert Job.objects.get(pk=job.pk).engine_objects == []
            retried = job.events.filter(message__contains="the engine failed to answer")
            assert retried.filter(message__startswith="Removing the snapshot").count() == 2
            assert job.events.filter(message__contains="failed to answer (Internal Engine Error)").exists()
            assert job.events.filter(message__contains="yet it was done").count() == 1
    finally:
        demo_sim.set_faults(fail_requests={})
        with demo_sim.connect() as conn:
            remove_vm(conn, vm.id)
