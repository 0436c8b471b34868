"""A backup as an engine user whose roles lack a permit: the engine refuses with its 403, the job
says what was refused and which permit to add, and nothing is left on the engine or the destination."""

from pathlib import Path

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import assert_clean_engine, backup, kept_snapshots, leave_engine_as_found


def test_it_fails_a_backup_the_engine_refuses_for_a_missing_permit_and_leaves_nothing(manager, destination, demo_sim):
    # The snapshot is allowed (made, then removed again); downloading its disks is not.
    demo_sim.add_user("snapshots-only", "secret", ["manipulate_vm_snapshots"])
    manager.username, manager.password = "snapshots-only@internal", "secret"
    manager.save()
    vm = VM.objects.get(manager=manager, name="test01")
    job = backup(vm, destination, type="full")
    assert job.status == Job.Status.FAILED
    assert (
        "The engine refused the image transfer: Cannot transfer Virtual Disk. User is not authorized to perform "
        "this action. The engine user's roles lack the edit_disk_properties permit: add it to the user's role "
        "on the engine."
    ) in job.error
    assert not BackupPoint.objects.filter(vm=vm, status="complete").exists()
    assert list(Path(destination.path).glob("*")) == []
    assert not job.engine_objects
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))


def test_it_keeps_the_checkpoint_when_the_engine_refuses_the_vm_backup_for_a_missing_permit(
    manager, destination, demo_sim
):
    vm = VM.objects.get(manager=manager, name="db01")
    first = backup(vm, destination, type="full", strategy="cbt", exclude=["db01_data"])
    assert first.status == Job.Status.SUCCEEDED, first.error
    kept = BackupPoint.objects.get(pk=first.result["point"])
    demo_sim.add_user("no-backups", "secret", ["manipulate_vm_snapshots", "edit_disk_properties"])
    manager.username, manager.password = "no-backups@internal", "secret"
    manager.save()
    job = backup(vm, destination, type="incremental", strategy="cbt", exclude=["db01_data"])
    assert job.status == Job.Status.FAILED
    assert "Cannot backup VM. User is not authorized to perform this action." in job.error
    assert "The engine user's roles lack the backup_disk permit" in job.error
    # The refusal is the user's, not the checkpoint's: the chain goes on once the permit is added.
    kept.refresh_from_db()
    assert kept.base_kind == "checkpoint" and kept.base_id
    assert BackupPoint.objects.filter(vm=vm, status="complete").count() == 1
    with demo_sim.connect() as conn:
        leave_engine_as_found(conn, str(vm.engine_id))
