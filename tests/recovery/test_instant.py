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
