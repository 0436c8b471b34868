"""A quiesced snapshot the engine accepts and then fails (the guest's freeze does not return): the
backup falls back to a crash-consistent snapshot, says so on the point, and leaves nothing else."""

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import assert_clean_engine, backup, leave_engine_as_found


def test_it_backs_up_crash_consistent_when_the_engine_fails_the_quiesced_snapshot_later(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="web01")
    demo_sim.set_guest_agent(str(vm.engine_id), running=True, freeze_hangs=True)
    try:
        job = backup(vm, destination, type="full", exclude=["web01_data"])
    finally:
        demo_sim.set_guest_agent(str(vm.engine_id), running=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    point = BackupPoint.objects.get(pk=job.result["point"])
    assert point.consistency == "crash"
    assert "Crash-consistent, not quiesced: the engine accepted the quiesced snapshot, then failed it" in point.note
    assert "due to: Unable to freeze guest filesystems" in point.note
    with demo_sim.connect() as conn:
        events = conn.system_service().events_service().list(search="vm.name=web01", max=20)
        assert {170, 69} <= {e.code for e in events}  # the engine said so, in its own events
        assert_clean_engine(conn, str(vm.engine_id), {point.base_id})
        leave_engine_as_found(conn, str(vm.engine_id))


def test_it_backs_up_crash_consistent_when_the_engine_fails_the_quiesced_vm_backup(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="db01")  # running; its OS disk tracks changes
    demo_sim.set_guest_agent(str(vm.engine_id), running=True, freeze_hangs=True)
    try:
        job = backup(vm, destination, type="full", strategy="cbt", exclude=["db01_data"])
    finally:
        demo_sim.set_guest_agent(str(vm.engine_id), running=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    point = BackupPoint.objects.get(pk=job.result["point"])
    assert point.consistency == "crash"
    assert point.note.startswith("Crash-consistent, not quiesced: ")
    assert "Failed to freeze guest filesystems on VM db01: the guest agent did not answer in time" in point.note
    with demo_sim.connect() as conn:
        backups = conn.system_service().vms_service().vm_service(str(vm.engine_id)).backups_service().list()
        assert all(b.phase.value in ("succeeded", "failed") for b in backups)
        assert_clean_engine(conn, str(vm.engine_id), set())  # no snapshot: CBT keeps a checkpoint
        leave_engine_as_found(conn, str(vm.engine_id))
