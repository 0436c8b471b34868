"""A backup as an engine user whose roles lack a permit: the engine refuses with its 403, the job
says what was refused and which permit to add, and nothing is left on the engine or the destination."""

from pathlib import Path

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import assert_clean_engine, backup, kept_snapshots


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
