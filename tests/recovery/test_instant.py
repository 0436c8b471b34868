"""Instant restore end to end against the simulated engine: a two-disk point booted from the backup
over the node's NFS share, written to by its guest, migrated to production storage or discarded;
every failure undone; the backup never changed."""

import hashlib
import subprocess

import ovirtsdk4.types as types
import pytest
from django.utils import timezone

from inventory.models import VM
from jobs.models import Job, Node
from jobs.nfs import node_exporter
from jobs.runner import run_job
from recovery.instant.workflow import request_discard, request_instant_restore, request_migrate
from recovery.models import InstantRestore
from repository.models import BackupPoint, PointClaim
from tests.helpers import backup


@pytest.fixture
def node_nfs(settings, tmp_path, demo_sim):
    """This node serves its shares with its own NFS-Ganesha (stopped after the test)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.NFS_EXPORTER, settings.NFS_ADDRESS, settings.NFS_BIND, settings.NFS_PORT = (
        "ganesha",
        "127.0.0.1",
        "127.0.0.1",
        0,
    )
    settings.NFS_CLIENTS = ["127.0.0.1"]
    # The hosts mount in the engine's storage network (as root), and their VMs' qemu reads the
    # restore's domain over NFS there: the node serves in it.
    settings.NFS_NETNS = demo_sim.storage_netns or ""
    Node.objects.create(name=settings.NODE_NAME, version="test", heartbeat=timezone.now())
    yield node_exporter()
    node_exporter().stop()


@pytest.fixture
def web01_point(manager, destination, demo_sim):
    """web01's two disks backed up full, written to by its guest, then incrementally: a chain."""
    vm = VM.objects.get(manager=manager, name="web01")
    backup(vm, destination, type="full")
    demo_sim.guest_write(str(vm.disks.get(name="web01_data").engine_id), 4096, b"between the backups")
    job = backup(vm, destination, type="incremental")
    assert job.status == "succeeded", job.error
    return BackupPoint.objects.get(pk=job.result["point"])


@pytest.fixture
def web01_full(manager, destination, demo_sim):
    """web01's two disks backed up full (one layer each): for what fails before the chain matters."""
    job = backup(VM.objects.get(manager=manager, name="web01"), destination, type="full")
    assert job.status == "succeeded", job.error
    return BackupPoint.objects.get(pk=job.result["point"])


def stored_files(point: BackupPoint) -> dict:
    root = point.directory.path.parent
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def run(job: Job) -> Job:
    run_job(job.pk)
    job.refresh_from_db()
    return job


def engine_state(sim, name: str) -> dict:
    with sim.connect() as conn:
        system = conn.system_service()
        return {
            "vms": [v.name for v in system.vms_service().list(search=f"name={name}")],
            "domains": [d.name for d in system.storage_domains_service().list() if d.name.startswith("instant-")],
        }


def test_it_boots_a_point_from_the_backup_and_discards_it(web01_point, node_nfs, demo_sim):
    before = stored_files(web01_point)
    instant, job = request_instant_restore(point=web01_point, name="web01-instant", origin="cli")
    assert PointClaim.objects.filter(token=instant.claim).count() == 2  # the point and its parent
    job = run(job)
    assert job.status == "succeeded", job.error
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.RUNNING and instant.seconds_to_up > 0
    steps = list(job.events.values_list("message", flat=True))
    assert any("Importing storage domain" in s for s in steps) and any("Registering VM" in s for s in steps)
    with demo_sim.connect() as conn:
        vm = conn.system_service().vms_service().vm_service(instant.vm_engine_id).get()
        assert vm.status == types.VmStatus.UP and vm.name == "web01-instant"
    assert [e.directory for e in node_nfs.exports()] == [instant_root := __import__("pathlib").Path(instant.directory)]
    # The guest writes: only its top layers change.
    data_disk = next(d for d in instant.disks if d["alias"] == "web01_data")
    demo_sim.guest_write(data_disk["image_id"], 0, b"written while running from the backup")
    assert stored_files(web01_point) == before
    job = run(request_discard(instant=instant, origin="cli"))
    assert job.status == "succeeded", job.error
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.DISCARDED and instant.tidied
    assert engine_state(demo_sim, "web01-instant") == {"vms": [], "domains": []}
    assert node_nfs.exports() == [] and not instant_root.exists()
    assert not PointClaim.objects.filter(token=instant.claim).exists()
    assert stored_files(web01_point) == before
    assert job.result["backup_intact"] is True


def nothing_left(sim, instant: InstantRestore, exporter) -> None:
    """What a failed or ended instant restore leaves: nothing on the engine, the node or the claims."""
    instant.refresh_from_db()
    assert engine_state(sim, instant.name) == {"vms": [], "domains": []}
    assert exporter.exports() == []
    assert instant.directory == "" or not __import__("pathlib").Path(instant.directory).exists()
    assert not PointClaim.objects.filter(token=instant.claim).exists()


def test_it_proves_a_point_boots_and_leaves_nothing(web01_point, node_nfs, demo_sim):
    before = stored_files(web01_point)
    instant, job = request_instant_restore(
        point=web01_point, name="proof-web01", origin="cli", purpose=InstantRestore.Purpose.PROOF
    )
    job = run(job)
    assert job.status == "succeeded", job.error
    instant.refresh_from_db()
    assert instant.proof_ok is True and instant.status == InstantRestore.Status.DISCARDED
    assert instant.proof_answer == "guest agent answered: proof-web01.example.internal, Debian GNU/Linux 12"
    assert instant.seconds_to_up > 0 and job.result["seconds_to_up"] == instant.seconds_to_up
    nothing_left(demo_sim, instant, node_nfs)
    assert stored_files(web01_point) == before


def test_it_fails_a_proof_whose_vm_never_comes_up(web01_full, node_nfs, demo_sim, settings):
    web01_point = web01_full
    settings.INSTANT_UP_TIMEOUT = 3
    instant, job = request_instant_restore(
        point=web01_point, name="proof-hangs", origin="cli", purpose=InstantRestore.Purpose.PROOF
    )
    demo_sim.set_faults(hang_next_vm_start=True)
    try:
        job = run(job)
    finally:
        demo_sim.set_faults(hang_next_vm_start=False)  # a boot that failed before its start leaves it set
    assert job.status == "failed"
    assert job.error.startswith(
        f"The restore proof of backup {web01_point.pk} failed. Starting VM proof-hangs failed: Timed out after 3s "
        "waiting for VM proof-hangs to be up"
    )
    instant.refresh_from_db()
    assert (instant.status, instant.proof_ok) == (InstantRestore.Status.FAILED, False)
    nothing_left(demo_sim, instant, node_nfs)


@pytest.mark.parametrize(
    "path, step",
    [
        (r"/storagedomains$", "Importing storage domain"),
        (r"/datacenters/[^/]+/storagedomains$", "Attaching instant-"),
        (r"/register$", "Registering VM web01-fails"),
        (r"/start$", "Starting VM web01-fails"),
    ],
)
def test_it_undoes_what_it_made_when_a_step_fails(web01_full, node_nfs, demo_sim, path, step):
    web01_point = web01_full
    before = stored_files(web01_point)
    demo_sim.set_faults(fail_requests={"times": 1, "status": 500, "methods": ["POST"], "path": path})
    try:
        instant, job = request_instant_restore(point=web01_point, name="web01-fails", origin="cli")
        job = run(job)
    finally:
        demo_sim.set_faults(fail_requests={})
    assert job.status == "failed"
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.FAILED and instant.step.startswith(step), instant.step
    assert "Internal Engine Error" in instant.error or "500" in instant.error, instant.error
    nothing_left(demo_sim, instant, node_nfs)
    assert stored_files(web01_point) == before


def test_it_migrates_a_running_instant_vm_to_production_storage(web01_point, node_nfs, demo_sim, tmp_path):
    """Booted, written to by its guest while it runs and while its disks move; afterwards each disk on
    the production domain holds the backup plus every guest write, and nothing of the instant restore
    is left but the VM."""
    import threading

    from tests.ovirtsim.helpers import download, wait_for

    before = stored_files(web01_point)
    instant, job = request_instant_restore(point=web01_point, name="web01-moved", origin="cli")
    assert run(job).status == "succeeded"
    instant.refresh_from_db()
    writes = {d["image_id"]: [] for d in instant.disks}
    for n, disk in enumerate(instant.disks):
        demo_sim.guest_write(disk["image_id"], 65536 * (n + 1), b"while running from the backup")
        writes[disk["image_id"]].append((65536 * (n + 1), b"while running from the backup"))
    demo_sim.set_faults(move_speed=4 * 1024**2)  # slow enough for the guest to write during the move
    try:
        migration = request_migrate(instant=instant, to="data-nfs", origin="cli")
        first, still = instant.disks[0]["image_id"], []

        def write_during_the_move():
            # The guest, on its own, while the worker moves its disks (the engine API only: no database).
            with demo_sim.connect() as conn:
                disks = conn.system_service().disks_service()
                wait_for(lambda: disks.disk_service(first).get().status == types.DiskStatus.LOCKED, what="the move")
                demo_sim.guest_write(first, 1024**2, b"during the migration")
                writes[first].append((1024**2, b"during the migration"))
                still.append(disks.disk_service(first).get().status)  # the move had not ended

        guest = threading.Thread(target=write_during_the_move)
        guest.start()
        run(migration)
        guest.join(timeout=60)
        assert writes[first][-1] == (1024**2, b"during the migration") and still == [types.DiskStatus.LOCKED]
    finally:
        demo_sim.set_faults(move_speed=0)
    migration.refresh_from_db()
    assert migration.status == "succeeded", migration.error
    assert migration.bytes_done == migration.bytes_total > 0
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.DONE and instant.tidied
    assert node_nfs.exports() == [] and not __import__("pathlib").Path(instant.directory).exists()
    assert not PointClaim.objects.filter(token=instant.claim).exists()
    assert stored_files(web01_point) == before
    with demo_sim.connect() as conn:
        system = conn.system_service()
        assert not [d for d in system.storage_domains_service().list() if d.name.startswith("instant-")]
        vm = system.vms_service().vm_service(instant.vm_engine_id)
        vm.stop()
        wait_for(lambda: vm.get().status == types.VmStatus.DOWN, what="the VM down")
        for disk in instant.disks:
            moved = system.disks_service().disk_service(disk["image_id"]).get()
            assert system.storage_domains_service().storage_domain_service(moved.storage_domains[0].id).get().name == (
                "data-nfs"
            )
            got, expected = tmp_path / f"{disk['alias']}.raw", tmp_path / f"{disk['alias']}.expected"
            download(conn, demo_sim.ca_file, got, disk_id=disk["image_id"], out_fmt="raw")
            stored = web01_point.directory.path / web01_point.manifest().disk(disk["original_id"]).file
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(stored), str(expected)], check=True)
            with open(expected, "r+b") as f:
                for offset, data in writes[disk["image_id"]]:
                    f.seek(offset)
                    f.write(data)
            compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(got), str(expected)])
            assert compared.returncode == 0, disk["alias"]
        system.vms_service().vm_service(instant.vm_engine_id).remove()


@pytest.mark.django_db(transaction=True)  # a worker process of its own runs the boot
def test_it_undoes_a_boot_whose_worker_was_killed(web01_point, node_nfs, demo_sim, settings):
    """A worker killed -9 while the VM boots: the reaper removes what the job recorded on the engine
    (the VM, the imported domain), and the serving node's heartbeat what is left on it (the export,
    the temporary domain's directory, the hold on the point)."""
    import os
    import signal
    import sys
    from pathlib import Path

    from jobs.tasks import reap_abandoned_jobs
    from recovery.instant.upkeep import keep_instant_restores_here
    from tests.helpers import worker_env
    from tests.ovirtsim.helpers import wait_for

    before = stored_files(web01_point)
    instant, job = request_instant_restore(point=web01_point, name="web01-killed", origin="cli")
    # First, as it skips the test on SQLite: the fault must not outlive the test (the engine is shared).
    env = worker_env(
        DATA_DIR=str(settings.DATA_DIR),
        NFS_EXPORTER="ganesha",
        NFS_ADDRESS="127.0.0.1",
        NFS_BIND="127.0.0.1",
        NFS_PORT="0",
        NFS_CLIENTS="127.0.0.1",
        NODE_NAME=settings.NODE_NAME,
        CREDENTIALS_KEY=settings.CREDENTIALS_KEY,  # read at the start from the site's own DATA_DIR
    )
    demo_sim.set_faults(hang_next_vm_start=True)
    worker = subprocess.Popen(
        [sys.executable, "-c", f"import django; django.setup(); from jobs.runner import run_job; run_job({job.pk})"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                InstantRestore.objects.get(pk=instant.pk).step.startswith("Starting VM") or worker.poll() is not None
            ),
            timeout=120,
            what="the VM to be started",
        )
        assert worker.poll() is None, "the worker ended by itself"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        demo_sim.set_faults(hang_next_vm_start=False)
    job.refresh_from_db()
    assert job.engine_objects and job.status == Job.Status.RUNNING
    assert reap_abandoned_jobs(timeout_seconds=0) == 1
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.FAILED and "Starting VM web01-killed" in instant.error, instant.error
    assert engine_state(demo_sim, "web01-killed") == {"vms": [], "domains": []}
    keep_instant_restores_here()
    nothing_left(demo_sim, instant, node_nfs)
    assert stored_files(web01_point) == before


def test_it_migrates_once_up_when_asked_and_again_after_a_move_failed(web01_point, node_nfs, demo_sim):
    """--migrate-to: the boot job goes on to migrate once the VM is up. The engine answers the first
    disk's move with a 500 although it moves it (a proxy timing out): the VM keeps running from the
    backup, the failed step is said, and the migration asked again moves what is left (the first disk
    is on the target already) and ends it."""
    from tests.ovirtsim.helpers import wait_for

    instant, job = request_instant_restore(
        point=web01_point, name="web01-then-moved", origin="cli", migrate_to="data-nfs"
    )
    demo_sim.set_faults(
        fail_requests={"times": 1, "status": 500, "methods": ["POST"], "path": r"/disks/[^/]+/move$", "after": True}
    )
    try:
        job = run(job)
    finally:
        demo_sim.set_faults(fail_requests={})
    instant.refresh_from_db()
    first = instant.disks[0]
    assert job.status == "failed" and f"Moving disk {first['alias']} to data-nfs" in job.error, job.error
    assert instant.status == InstantRestore.Status.RUNNING and instant.up_at is not None
    assert instant.error.startswith(f"Moving disk {first['alias']} to data-nfs failed"), instant.error
    with demo_sim.connect() as conn:
        system = conn.system_service()

        def on_target(disk_id: str) -> bool:
            disk = system.disks_service().disk_service(disk_id).get()
            domain = system.storage_domains_service().storage_domain_service(disk.storage_domains[0].id).get()
            return disk.status == types.DiskStatus.OK and domain.name == "data-nfs"

        wait_for(lambda: on_target(first["image_id"]), timeout=120, what="the engine's move of the first disk")
        again = run(request_migrate(instant=instant, to="data-nfs", origin="cli"))
        assert again.status == "succeeded", again.error
        instant.refresh_from_db()
        assert instant.status == InstantRestore.Status.DONE
        assert node_nfs.exports() == [] and not PointClaim.objects.filter(token=instant.claim).exists()
        assert all(on_target(d["image_id"]) for d in instant.disks)
        vm = system.vms_service().vm_service(instant.vm_engine_id)
        vm.stop()
        wait_for(lambda: vm.get().status == types.VmStatus.DOWN, what="the VM down")
        vm.remove()


def test_it_ends_an_instant_restore_whose_boot_was_cancelled_before_it_ran(web01_full, node_nfs):
    from datetime import timedelta

    from recovery.instant.errors import InstantError
    from recovery.instant.upkeep import keep_instant_restores_here

    instant, job = request_instant_restore(point=web01_full, name="web01-cancelled", origin="cli")
    job.request_cancel()
    with pytest.raises(InstantError, match="already boots a VM named web01-cancelled"):
        request_instant_restore(point=web01_full, name="web01-cancelled", origin="cli")
    keep_instant_restores_here()
    instant.refresh_from_db()
    assert instant.status == InstantRestore.Status.BOOTING  # a request's record comes before its job
    InstantRestore.objects.filter(pk=instant.pk).update(created=timezone.now() - timedelta(minutes=2))
    keep_instant_restores_here()
    instant.refresh_from_db()
    assert (instant.status, instant.error) == (
        InstantRestore.Status.FAILED,
        "Its boot job ended before it started (cancelled).",
    )
    assert not PointClaim.objects.filter(token=instant.claim).exists()
    with pytest.raises(InstantError, match="there is nothing to discard"):
        request_discard(instant=instant, origin="cli")
    again, _ = request_instant_restore(point=web01_full, name="web01-cancelled", origin="cli")
    assert again.pk != instant.pk
