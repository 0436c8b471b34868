"""Rows for the backup point pages: one VM with two disks, a chain (a full and two incrementals, one
verified, one damaged), a failed attempt, the jobs that made them and a restore asked of one."""

import uuid
from datetime import timedelta

from django.utils import timezone

from core.audit import record
from inventory.models import VM, Cluster, DataCenter, Disk, Manager, StorageDomain
from jobs.models import Job
from repository.models import BackupDestination, BackupPoint, DiskBackup

GiB = 1024**3


def make_chain(path, *, name: str = "web01", manager=None) -> dict:
    if manager is None:
        manager = Manager.objects.create(
            name=f"m-{name}", api_url="https://engine.invalid/ovirt-engine/api", username="admin@internal"
        )
        dc = DataCenter.objects.create(manager=manager, engine_id="00000000-0000-0000-00dc-000000000001", name="dc")
        Cluster.objects.create(
            manager=manager, engine_id="00000000-0000-0000-00c1-000000000001", name="Production", data_center=dc
        )
        StorageDomain.objects.create(
            manager=manager,
            engine_id="00000000-0000-0000-05d0-000000000001",
            name="data1",
            data_center=dc,
            available_bytes=500 * GiB,
            used_bytes=100 * GiB,
        )
    vm = VM.objects.create(manager=manager, engine_id=uuid.uuid4(), name=name)
    disks = [
        Disk.objects.create(manager=manager, engine_id=uuid.uuid4(), name=f"{name}_disk{i}", vm=vm) for i in (1, 2)
    ]
    destination = BackupDestination.objects.filter(path=str(path)).first() or BackupDestination.objects.create(
        name=f"nas-{name}", path=str(path)
    )
    start = timezone.now() - timedelta(days=3)
    points, parent = [], None
    for n, (kind, status) in enumerate([("full", "complete"), ("incremental", "complete"), ("incremental", "damaged")]):
        when = start + timedelta(days=n)
        job = Job.objects.create(
            kind="backup",
            vm=vm,
            name=name,
            status=Job.Status.SUCCEEDED,
            created=when,
            finished=when + timedelta(seconds=130),
        )
        point = BackupPoint.objects.create(
            vm=vm,
            destination=destination,
            job=job,
            strategy="image_transfer",
            type=kind,
            parent=parent,
            status=status,
            started=when,
            finished=when + timedelta(seconds=130),
            bytes_stored=(10 - 4 * bool(n)) * GiB,
            consistency="filesystem",
            verified=when + timedelta(hours=1) if n else None,
            damage="b.qcow2 does not match its checksum." if status == "damaged" else "",
        )
        for d in disks:
            DiskBackup.objects.create(
                point=point, disk=d, file=f"{d.engine_id}.qcow2", virtual_size=20 * GiB, stored_size=3 * GiB
            )
        points.append(point)
        parent = point
    failed_job = Job.objects.create(
        kind="backup", vm=vm, name=name, status=Job.Status.FAILED, error="The engine refused the snapshot."
    )
    failed = BackupPoint.objects.create(
        vm=vm, destination=destination, job=failed_job, strategy="image_transfer", status="failed"
    )
    restore = Job.objects.create(
        kind="restore",
        vm=vm,
        name=f"{name} -> {name}-restored",
        status=Job.Status.SUCCEEDED,
        params={"point": points[1].pk},
    )
    record(actor="otto", source="page", action="restore_requested", target=points[1], job=restore.pk)
    return {
        "vm": vm,
        "disks": disks,
        "destination": destination,
        "points": points,
        "failed": failed,
        "restore": restore,
    }
