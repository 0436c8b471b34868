"""Backups and restores with the image transfer strategy, end to end against ovirtsim."""

from pathlib import Path

import ovirtsdk4.types as types
import pytest

from inventory.models import VM, Manager
from inventory.sync import sync_manager
from jobs.models import Job
from jobs.runner import run_job
from repository.models import BackupDestination, BackupPoint
from repository.restore import request_restore
from strategies.backup import request_backup
from tests.ovirtsim.helpers import download, identical, read_bytes

MiB = 1024**2


@pytest.fixture
def manager(db, demo_sim):
    manager = Manager.objects.create(
        name="demo",
        api_url=demo_sim.api_url,
        username=demo_sim.username,
        password=demo_sim.password,
        ca_certificate=Path(demo_sim.ca_file).read_text(),
    )
    sync_manager(manager)
    return manager


@pytest.fixture
def destination(db, tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    return BackupDestination.objects.create(name="repo", path=str(path))


def backup(vm, destination, **kwargs) -> Job:
    job = request_backup(vm=vm, destination=destination, **kwargs)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def restore(point, name, **kwargs) -> Job:
    job = request_restore(point=point, name=name, **kwargs)
    run_job(job.pk)
    job.refresh_from_db()
    return job


def engine_snapshots(conn, vm_id):
    return [
        s
        for s in conn.system_service().vms_service().vm_service(vm_id).snapshots_service().list()
        if s.snapshot_type == types.SnapshotType.REGULAR
    ]


def disks_of(conn, vm_id) -> dict[str, types.Disk]:
    service = conn.system_service().vms_service().vm_service(vm_id)
    return {a.disk.alias: a.disk for a in service.disk_attachments_service().list(follow="disk")}


def reference(conn, sim, vm_id, snapshot_id, tmp_path, tag) -> dict[str, Path]:
    """What the guest saw at the backup: the kept snapshot's disks, read back whole from the engine."""
    service = conn.system_service().vms_service().vm_service(vm_id).snapshots_service().snapshot_service(snapshot_id)
    result = {}
    for disk in service.disks_service().list():
        out = tmp_path / f"ref-{tag}-{disk.alias}.raw"
        download(conn, sim.ca_file, out, snapshot_id=disk.image_id, fmt="raw", out_fmt="raw")
        result[disk.alias] = out
    return result


def assert_clean_engine(conn, vm_id, keep: set[str]):
    assert {s.id for s in engine_snapshots(conn, vm_id)} == keep
    transfers = conn.system_service().image_transfers_service().list()
    assert all(
        t.phase in (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE)
        for t in transfers
    ), [t.phase for t in transfers]
    assert all(d.status == types.DiskStatus.OK for d in disks_of(conn, vm_id).values())


def test_it_backs_up_full_then_incrementals_and_restores_every_point(manager, destination, demo_sim, tmp_path):
    vm = VM.objects.get(manager=manager, name="web01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disks = disks_of(conn, vm_id)
        points, references = [], []
        writes = [
            None,
            [("web01_data", 4 * MiB, 0x77), ("web01_os", 10 * MiB, 0x78)],
            [("web01_data", 20 * MiB, 0x79), ("web01_data", 4 * MiB + 512 * 1024, 0x7A)],
        ]
        for n, batch in enumerate(writes):
            for alias, offset, pattern in batch or []:
                demo_sim.guest_write(disks[alias].id, offset, bytes([pattern]) * MiB)
            job = backup(vm, destination)
            assert job.status == Job.Status.SUCCEEDED, job.error
            point = BackupPoint.objects.get(pk=job.result["point"])
            points.append(point)
            references.append(reference(conn, demo_sim, vm_id, point.engine_snapshot_id, tmp_path, n))
            assert_clean_engine(conn, vm_id, {point.engine_snapshot_id})

        assert [p.type for p in points] == ["full", "incremental", "incremental"]
        assert [p.parent_id for p in points] == [None, points[0].pk, points[1].pk]
        assert points[2].bytes_stored < 4 * MiB < points[0].bytes_stored
        assert [
            p.engine_snapshot_id for p in BackupPoint.objects.filter(pk__in=[x.pk for x in points]).order_by("started")
        ][:2] == ["", ""]
        manifest = points[2].directory.read_manifest()
        assert manifest["parent_backup_id"] == str(points[1].uuid)
        assert {d["alias"] for d in manifest["disks"]} == {"web01_os", "web01_data"}

        for n, point in enumerate(points):
            job = restore(point, f"web01-restored-{n}")
            assert job.status == Job.Status.SUCCEEDED, job.error
            restored_id = job.result["vm_id"]
            restored = disks_of(conn, restored_id)
            assert set(restored) == {"web01_os", "web01_data"}
            for alias, disk in restored.items():
                out = tmp_path / f"restored-{n}-{alias}.raw"
                download(conn, demo_sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
                assert identical(references[n][alias], out), (n, alias)
            assert restored["web01_os"].format == types.DiskFormat.COW
            vm_service = conn.system_service().vms_service().vm_service(restored_id)
            assert vm_service.get().memory == 2 * 2**30
            vm_service.remove()
        assert read_bytes(references[2]["web01_data"], 20 * MiB, MiB) == b"\x79" * MiB
        assert read_bytes(references[0]["web01_data"], 20 * MiB, MiB) != b"\x79" * MiB
