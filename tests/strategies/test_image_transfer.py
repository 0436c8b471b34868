"""Backups and restores with the image transfer strategy, end to end against ovirtsim."""

import re
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from inventory.models import VM
from jobs.models import Job
from ovirt.snapshots import remove_snapshot
from ovirt.transfers import OPEN_TRANSFER_PHASES
from repository.models import BackupDestination, BackupPoint
from strategies.backup import request_backup
from tests.helpers import (
    assert_clean_engine,
    backup,
    engine_snapshots,
    kept_snapshots,
    reference,
    run_job_doing_once_data_moves,
)
from tests.ovirtsim.helpers import identical

MiB = 1024**2


def test_it_takes_a_full_when_the_kept_snapshot_was_deleted(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    first = backup(vm, destination)
    kept = BackupPoint.objects.get(pk=first.result["point"]).base_id
    with demo_sim.connect() as conn:
        remove_snapshot(conn, str(vm.engine_id), kept)
        second = backup(vm, destination, type="incremental")
        assert second.status == Job.Status.SUCCEEDED, second.error
        point = BackupPoint.objects.get(pk=second.result["point"])
        assert point.type == "full" and "was deleted on the engine" in point.note
        assert_clean_engine(conn, str(vm.engine_id), {point.base_id})


@pytest.mark.parametrize("fault", ["fail_next_snapshot", "pause_next_transfer"])
def test_it_leaves_nothing_behind_when_the_engine_fails(manager, destination, demo_sim, fault):
    vm = VM.objects.get(manager=manager, name="db01")
    demo_sim.set_faults(**{fault: True})
    try:
        job = backup(vm, destination, type="full")
    finally:
        demo_sim.clear_faults()
    assert job.status == Job.Status.FAILED
    assert (
        ("failed to create the snapshot" in job.error)
        if fault == "fail_next_snapshot"
        else ("paused_system" in job.error)
    )
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))
    assert not BackupPoint.objects.filter(vm=vm, status="complete", job=job).exists()
    assert [p.name for p in Path(destination.path).glob("*")] == []
    # Its cleanup ran: its record of what it made on the engine is cleared, for no reaper to act on.
    assert job.engine_objects == []


def test_it_fails_cleanly_on_a_full_destination(manager, demo_sim, tmp_path):
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        destination = BackupDestination.objects.create(name="small", path=str(mount))
        older = mount / "older-backup"
        older.write_bytes(b"x" * 1024)
        vm = VM.objects.get(manager=manager, name="web01")
        job = backup(vm, destination, type="full")
        assert job.status == Job.Status.FAILED
        assert "MiB free" in job.error and "older backups are untouched" in job.error
        assert older.read_bytes() == b"x" * 1024
        assert sorted(p.name for p in mount.iterdir()) == ["older-backup"]
        with demo_sim.connect() as conn:
            assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))
    finally:
        subprocess.run(["umount", str(mount)])


def test_it_backs_up_and_restores_through_the_api_and_cli(
    manager, destination, demo_sim, api_as, settings, django_capture_on_commit_callbacks
):
    import io

    from django.core.management import CommandError, call_command
    from django.urls import reverse

    from core import roles

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    vm = VM.objects.get(manager=manager, name="test01")
    url = reverse("api:vm-backup", kwargs={"pk": vm.pk})
    assert api_as(roles.VIEWER).post(url, {"destination": "repo"}, format="json").status_code == 403
    response = api_as(roles.OPERATOR).post(url, {"destination": "nope"}, format="json")
    assert response.status_code == 400 and "No destination" in response.json()["error"]["message"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(roles.OPERATOR).post(url, {"destination": "repo", "type": "full"}, format="json")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["job"])
    assert job.status == Job.Status.SUCCEEDED, job.error
    point = job.result["point"]
    restore_url = reverse("api:backup-restore", kwargs={"pk": point})
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(roles.OPERATOR).post(restore_url, {"name": "test01-api"}, format="json")
    restored = Job.objects.get(pk=response.json()["job"])
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    # Not left on the engine this process's tests share: a later test's sync would find a VM named test01-api.
    with demo_sim.connect() as conn:
        conn.system_service().vms_service().vm_service(restored.result["vm_id"]).remove()

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("backup", "test01", "--destination", "repo", "--type", "incremental", stdout=out)
    job_id = int(out.getvalue().split()[0])
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED
    out = io.StringIO()
    call_command("jobs", stdout=out)
    assert f"{job_id:>6}  backup" in out.getvalue()
    with pytest.raises(CommandError, match="No VM named"):
        call_command("backup", "no-such-vm", "--destination", "repo")
    cancel = reverse("api:job-cancel", kwargs={"pk": job_id})
    assert api_as(roles.OPERATOR).post(cancel).status_code == 400  # already finished


@pytest.mark.django_db(transaction=True)
def test_it_removes_and_names_the_snapshot_of_a_worker_killed_after_its_disk_was_stored(manager, destination, demo_sim):
    """The worker has stored the VM's disk and hangs flushing it to a destination that stopped
    answering (an NFS server gone), where it is killed -9: the point was never completed. The
    reaper's error names the snapshot the job took, and the snapshot is gone from the engine."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from jobs.tasks import reap_abandoned_jobs
    from tests.helpers import settled, worker_env
    from tests.ovirtsim.helpers import wait_for

    vm = VM.objects.get(manager=manager, name="test01")
    job = request_backup(vm=vm, origin="cli", destination=destination, type="full")
    # os.fsync of a stored disk file never returns, as on a hung NFS mount.
    hung_destination = (
        "import os, time\n"
        "real_fsync = os.fsync\n"
        "def fsync(fd):\n"
        "    if os.readlink(f'/proc/self/fd/{fd}').endswith('.qcow2'):\n"
        "        time.sleep(3600)\n"
        "    real_fsync(fd)\n"
        "os.fsync = fsync\n"
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"{hung_destination}import django; django.setup(); from jobs.runner import run_job; run_job({job.pk})",
        ],
        env=worker_env(),
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: worker.poll() is not None or job.events.filter(message__startswith="Disk test01_os:").exists(),
            timeout=120,
            what="the disk to be stored",
        )
        assert worker.poll() is None, "the worker ended before it stored the disk"
        time.sleep(1)  # well into the flush that never ends
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert BackupPoint.objects.get(job=job).status == BackupPoint.Status.RUNNING

    assert reap_abandoned_jobs(timeout_seconds=0) == 1
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert f"Undone on the engine: snapshot 'ovirt-backup: job {job.pk}' (" in job.error, job.error
    assert "nothing on the engine" not in job.error
    assert job.engine_objects == []
    assert BackupPoint.objects.get(job=job).status == BackupPoint.Status.FAILED
    (taken,) = [
        e.split()[1] for e in job.events.filter(message__startswith="Snapshot ").values_list("message", flat=True)
    ]
    assert f"'ovirt-backup: job {job.pk}' ({taken})" in job.error
    with demo_sim.connect() as conn:
        wait_for(lambda: settled(conn, str(vm.engine_id)), what="the engine to finish merging")
        assert taken not in {s.id for s in engine_snapshots(conn, str(vm.engine_id))}
        open_phases = {types.ImageTransferPhase.TRANSFERRING, types.ImageTransferPhase.INITIALIZING}
        assert not [t for t in conn.system_service().image_transfers_service().list() if t.phase in open_phases]


def test_it_forgets_only_what_it_cleaned_up_or_keeps(manager, destination, demo_sim):
    """Right after the strategy's backup(), before the runner ends the job, its record of engine
    objects is empty: the transfer ended and the kept snapshot belongs to the point, so a reaper
    (should the worker die now) would remove neither."""
    from ovirt.connection import connect
    from strategies.backup import request_backup as queue
    from strategies.base import BackupRequest
    from strategies.registry import get_strategy

    vm = VM.objects.get(manager=manager, name="test01")
    job = queue(vm=vm, origin="cli", destination=destination, type="full")
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    request = BackupRequest(vm=vm, destination=destination, type="full")
    with connect(manager) as conn:
        point = get_strategy("image_transfer")(job=job, connection=conn, request=request).backup()
        job.refresh_from_db()
        assert job.engine_objects == []
        assert point.base_kind == "snapshot"
        assert_clean_engine(conn, str(vm.engine_id), {point.base_id})
        remove_snapshot(conn, str(vm.engine_id), point.base_id)


@pytest.mark.django_db(transaction=True)
def test_it_tells_the_first_failure_when_the_engine_stops_mid_transfer(tmp_path, destination):
    """The engine (and its imageio) goes away while a disk downloads: the job's error is the
    download's failure, not the cleanup's, whose failures are told after it."""
    from inventory.sync import sync_manager
    from ovirtsim import Simulator
    from tests.conftest import register_manager

    sim = Simulator(tmp_path / "engine", seed="demo").start()
    try:
        manager = register_manager(sim, name="doomed")
        sync_manager(manager)
        vm = VM.objects.get(manager=manager, name="bigdata01")
        job = request_backup(vm=vm, origin="cli", destination=destination, type="full")
        run_job_doing_once_data_moves(job, sim.stop)
    finally:
        sim.stop()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    # The download's failure first: the engine (or its imageio) going away, or what imageio said.
    first = (
        r"The engine at \S+ (stopped answering|failed) while downloading disk bigdata01_data \("
        r"|Downloading disk bigdata01_data failed:"
    )
    assert re.match(first, job.error), job.error
    # Whether the cleanup still reached the engine depends on how far its shutdown got; what it could
    # not undo, if anything, is told after the cause and in the log.
    undone = list(job.events.filter(message__startswith="Cleanup: ").values_list("message", flat=True))
    for message in undone:
        assert message.removeprefix("Cleanup: ") in job.error
    assert [p.name for p in Path(destination.path).glob("*")] == []


@pytest.mark.django_db(transaction=True)
def test_it_tells_in_words_that_the_engine_died_mid_download_and_undoes_the_rest_once_it_is_back(tmp_path, destination):
    """The engine is killed (-9: it and its imageio die at once) while a disk downloads: the job's
    error says so in words (no pycurl tuples, no object reprs), that nothing was stored, and what
    its cleanup could not undo, by name and id. Once the engine is back, the reaper removes that."""
    from inventory.sync import sync_manager
    from jobs.tasks import reap_abandoned_jobs
    from ovirtsim import Simulator
    from tests.conftest import free_port, register_manager

    sim = Simulator(tmp_path / "engine", seed="demo", port=free_port()).start()
    try:
        manager = register_manager(sim, name="crashing")
        sync_manager(manager)
        vm = VM.objects.get(manager=manager, name="bigdata01")
        job = request_backup(vm=vm, origin="cli", destination=destination, type="full")
        run_job_doing_once_data_moves(job, sim.kill)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED
        assert job.error.startswith(
            f"The engine at {sim.url} stopped answering while downloading disk bigdata01_data ("
        ), job.error
        assert "Nothing was stored; retry when the engine is up." in job.error
        for message in [job.error, *job.events.exclude(level="debug").values_list("message", flat=True)]:
            assert "pycurl" not in message and "<" not in message and "Expected " not in message, message
        (snapshot,) = [o for o in job.engine_objects if o["kind"] == "snapshot"]
        assert f"Left on the engine: snapshot '{snapshot['name']}' ({snapshot['id']})" in job.error
        assert [p.name for p in Path(destination.path).glob("*")] == []

        sim.start()
        reap_abandoned_jobs(timeout_seconds=0)
        job.refresh_from_db()
        assert job.engine_objects == []
        with sim.connect() as conn:
            assert_clean_engine(conn, str(vm.engine_id), set())
    finally:
        sim.stop()


def test_it_says_in_words_that_the_engine_is_down_when_a_backup_starts(tmp_path, destination):
    """A backup of a VM whose engine is down: the job fails saying so, in words (no pycurl tuples)."""
    from inventory.sync import sync_manager
    from ovirtsim import Simulator
    from tests.conftest import register_manager

    sim = Simulator(tmp_path / "engine", seed="demo").start()
    try:
        down = register_manager(sim, name="down")
        sync_manager(down)
    finally:
        sim.kill()
    try:
        job = backup(VM.objects.get(manager=down, name="test01"), destination, type="full")
        assert job.status == Job.Status.FAILED
        assert job.error == "The engine of down stopped answering: connection refused.", job.error
    finally:
        sim.stop()  # what the killed engine left on this machine (its LVM's loop devices)


def test_it_keeps_one_chain_per_vm_when_backing_up_to_a_second_destination(manager, destination, demo_sim, tmp_path):
    vm = VM.objects.get(manager=manager, name="test01")
    (tmp_path / "second").mkdir()
    second = BackupDestination.objects.create(name="second", path=str(tmp_path / "second"))
    first = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    assert first.base_kind == "snapshot"

    other = BackupPoint.objects.get(pk=backup(vm, second, type="incremental").result["point"])
    assert (other.type, other.base_kind, other.destination) == ("full", "", second)
    assert f"keeps its incremental chain on destination repo (backup {first.pk})" in other.note

    demo_sim.guest_write(str(vm.engine_id), 0, b"after both" * 100)
    again = BackupPoint.objects.get(pk=backup(vm, destination, type="incremental").result["point"])
    assert (again.type, again.parent) == ("incremental", first), again.note
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), {again.base_id})
        # The chain on the first destination holds what the guest saw, the write made meanwhile too.
        ((alias, seen),) = reference(conn, demo_sim, str(vm.engine_id), again.base_id, tmp_path, "again").items()
        (entry,) = again.manifest().disks
        assert identical(again.directory.path / entry.file, seen), alias


def test_it_says_an_incremental_is_full_because_its_policy_takes_full_backups_only(manager, destination, demo_sim):
    """`--type incremental` of a VM whose policy has full_every_days=0 (always full, nothing kept on
    the engine): the point is full, and its note gives that reason, not a missing earlier backup."""
    from policies.models import Policy

    vm = VM.objects.get(manager=manager, name="test01")
    policy = Policy.objects.create(name="always-full", destination=destination, full_every_days=0)
    policy.vms.add(vm)
    for _ in range(2):  # the second has an earlier backup: still full, for the same reason
        job = backup(vm, destination, type="incremental")
        assert job.status == Job.Status.SUCCEEDED, job.error
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert point.type == "full" and point.base_id == ""
        assert "policy always-full takes full backups only" in point.note, point.note
        assert "no earlier backup" not in point.note
        assert job.events.filter(message=point.note).exists()
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), set())


def test_it_asks_again_when_the_engine_is_busy_finalizing_a_transfer(manager, destination, demo_sim):
    """A 409 on finalize ("Related operation is currently in progress") is asked again, as every
    other call is, instead of failing the backup and leaving the transfer open on the disk."""
    vm = VM.objects.get(manager=manager, name="test01")
    demo_sim.set_faults(fail_requests={"times": 2, "status": 409, "methods": ["POST"], "path": "/finalize$"})
    try:
        job = backup(vm, destination, type="full")
    finally:
        demo_sim.set_faults(fail_requests={})
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert demo_sim.failed_requests().get(409, 0) >= 2
    busy = [
        e.message for e in job.events.all() if "Finalizing the image transfer: the engine answered busy" in e.message
    ]
    assert len(busy) == 2, busy
    with demo_sim.connect() as conn:
        transfers = conn.system_service().image_transfers_service().list()
        assert not [t for t in transfers if t.phase in OPEN_TRANSFER_PHASES]
