"""Deletes, prunes, backups and restores of one chain at the same time: every reader and writer of a
chain claims its points (repository.claims), so none takes a file from under another."""

import fcntl
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone
from ovirt_imageio import client

from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from repository.claims import EXCLUSIVE, READ, chain_of, claim_points
from repository.models import BackupPoint, PointClaim
from repository.retention import delete_backup, prune_policy
from tests.helpers import backup, restore
from tests.ovirtsim.helpers import download, identical
from tests.repository.test_delete import full_and_incremental


def openable(point: BackupPoint) -> None:
    """qemu-img opens every disk of the point with its whole backing chain."""
    images = list(point.directory.path.glob("*.qcow2"))
    assert images
    for image in images:
        info = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", str(image)], capture_output=True, text=True)
        assert info.returncode == 0, info.stderr


def wait_until_in(thread: threading.Thread, function: str, timeout: float = 30) -> None:
    """Return once the thread's stack is inside `function` (the delete waits there for the lock)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = sys._current_frames().get(thread.ident)
        while frame is not None and frame.f_code.co_name != function:
            frame = frame.f_back
        if frame is not None:
            return
        assert thread.is_alive() and time.monotonic() < deadline, f"the thread never reached {function}"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)  # the delete runs in a thread of its own, with its own connection
def test_it_refuses_a_delete_that_waited_for_the_lock_while_an_incremental_built_on_the_point(
    manager, destination, demo_sim
):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    outcome, out = {}, io.StringIO()

    def delete():
        try:
            call_command("delete_backup", str(incremental.pk), "--yes", stdout=out)
        except CommandError as e:
            outcome["refused"] = str(e)
        finally:
            connections.close_all()

    # The chain's lock held as a prune (or `flock` by hand) holds it: the delete waits for it.
    with open(Path(destination.path, str(vm.engine_id), ".retention.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=delete)
        thread.start()
        try:
            wait_until_in(thread, "chain_lock")
            job = backup(vm, destination, type="incremental")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            thread.join(60)
    assert job.status == Job.Status.SUCCEEDED, job.error
    newest = BackupPoint.objects.get(pk=job.result["point"])
    assert newest.parent_id == incremental.pk

    assert outcome.get("refused", "").startswith(
        f"Backup {incremental.pk} has 1 backup(s) built on it ({newest.pk})"
    ), (outcome, out.getvalue())
    assert out.getvalue() == (
        "Waiting for the lock of VM test01's backups on repo (a prune or another deletion holds it)...\n"
    )
    assert BackupPoint.objects.kept().filter(pk__in=[full.pk, incremental.pk, newest.pk]).count() == 3
    openable(newest)
    after = backup(vm, destination, type="incremental")
    assert after.status == Job.Status.SUCCEEDED, after.error
    assert BackupPoint.objects.get(pk=after.result["point"]).parent_id == newest.pk


def test_it_backs_up_full_rather_than_build_on_a_point_being_deleted(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    with claim_points([incremental], mode=EXCLUSIVE, doing="deleted"):  # as a deletion on another node
        job = backup(vm, destination, type="incremental")
    assert job.status == Job.Status.SUCCEEDED, job.error
    point = BackupPoint.objects.get(pk=job.result["point"])
    assert (point.type, point.parent) == ("full", None)
    assert point.note.startswith(
        f"Full backup instead of incremental: Backup {incremental.pk} is being deleted by a request on "
    ) and point.note.endswith(", so it is not built on."), point.note
    assert point.note in [e.message for e in job.events.all()]
    openable(incremental)


def test_it_refuses_a_delete_of_the_point_a_restore_reads_and_the_restore_succeeds(
    manager, destination, demo_sim, monkeypatch, tmp_path
):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    refusals = []
    upload = client.upload

    def upload_after_a_delete(path, *args, **kwargs):
        # The restore has read the manifests and checked the files; now someone deletes the point.
        try:
            call_command("delete_backup", str(incremental.pk), "--yes")
        except CommandError as e:
            refusals.append(str(e))
        return upload(path, *args, **kwargs)

    monkeypatch.setattr(client, "upload", upload_after_a_delete)
    job = restore(incremental, "claims-restored")
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert refusals and set(refusals) == {
        f"Backup {incremental.pk} is being read by restore job {job.pk}: wait for it to end."
    }
    assert BackupPoint.objects.kept().filter(pk__in=[full.pk, incremental.pk]).count() == 2
    openable(incremental)
    monkeypatch.undo()

    # The VM restored holds what the point holds; and, the restore over, the point can go.
    with demo_sim.connect() as conn:
        vms = conn.system_service().vms_service()
        new = vms.list(search="name=claims-restored")[0]
        for attachment in vms.vm_service(new.id).disk_attachments_service().list(follow="disk"):
            record = incremental.disks.get(disk__name=attachment.disk.alias)
            out = tmp_path / f"{attachment.disk.alias}.raw"
            download(conn, demo_sim.ca_file, out, disk_id=attachment.disk.id, fmt="raw", out_fmt="raw")
            assert identical(Path(destination.path, record.file), out), attachment.disk.alias
    assert delete_backup(point=incremental, with_dependants=False) == [incremental.pk]


def test_it_leaves_a_chain_a_restore_reads_to_the_next_prune(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    policy = Policy.objects.create(name="p", destination=destination, keep_last=1)
    BackupPoint.objects.filter(pk__in=[full.pk, incremental.pk]).update(policy=policy)
    prune = Job.objects.create(kind="retention", started_by=policy, name="p")
    prune.start()

    with claim_points(chain_of(incremental), mode=READ, doing="read"):  # as a restore of it reads
        result = prune_policy(policy=policy, dry_run=False, job=prune)
    assert (result["deleted"], result["merged"], result["busy"]) == ([], [], [vm.pk])
    assert f"Backup {full.pk} is being read (through backup {incremental.pk}) by a request on " in "\n".join(
        e.message for e in prune.events.filter(level="warning")
    )
    assert BackupPoint.objects.kept().filter(pk__in=[full.pk, incremental.pk]).count() == 2
    openable(incremental)

    result = prune_policy(policy=policy, dry_run=False, job=prune)
    assert (result["deleted"], result["merged"]) == ([full.pk], [full.pk])
    incremental.refresh_from_db()
    assert incremental.type == "full"
    openable(incremental)


def test_it_forgets_the_claims_of_a_dead_job_and_a_dead_process(manager, destination, demo_sim, settings):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    reader = Job.objects.create(kind="restore", vm=vm, name="restore")
    reader.start()
    with claim_points(chain_of(incremental), mode=READ, doing="read", job=reader):
        with pytest.raises(ValueError, match=f"Backup {incremental.pk} is being read by restore job {reader.pk}: "):
            delete_backup(point=incremental, with_dependants=False)
        # Its worker was killed: the heartbeat stops, and after the reaper's timeout the claim is dead.
        stale = timezone.now() - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT + 1)
        Job.objects.filter(pk=reader.pk).update(heartbeat=stale)
        assert delete_backup(point=incremental, with_dependants=False) == [incremental.pk]

    # A deletion by hand on this node: its claim lives with its process, not 15 minutes after it was killed.
    claim = PointClaim.objects.create(
        token=uuid.uuid4(),
        point=full,
        mode=EXCLUSIVE,
        doing="deleted",
        holder=f"a request on {settings.NODE_NAME} (process {os.getpid()})",
        node=settings.NODE_NAME,
        pid=os.getpid(),
        expires=timezone.now() + timedelta(minutes=15),
    )
    with pytest.raises(ValueError, match=f"Backup {full.pk} is being deleted by a request on .*: wait for it to end"):
        delete_backup(point=full, with_dependants=False)
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    PointClaim.objects.filter(pk=claim.pk).update(pid=int(dead))
    # Asked again, the deletion goes ahead.
    assert delete_backup(point=full, with_dependants=False) == [full.pk]
    assert not PointClaim.objects.exists()
