"""Sample rows for the instant restore pages and API: an inventory (a data center with data domains,
another data center's domain, an instant restore's own temporary domain), a VM, a complete backup
point, and instant restores in any state, made directly (the engine side has tests of its own)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.models import AuditEvent
from inventory.models import VM, Cluster, DataCenter, Manager, StorageDomain
from jobs.models import Job
from recovery.models import InstantRestore
from repository.models import BackupDestination, BackupPoint

GiB = 1024**3
DISKS = [
    {
        "alias": "web01_os",
        "original_id": "11111111-0000-0000-0000-000000000001",
        "image_id": "22222222-0000-0000-0000-000000000001",
        "volume_id": "33333333-0000-0000-0000-000000000001",
        "chain": ["a.qcow2", "b.qcow2"],
        "virtual_size": 20 * GiB,
    }
]


# What each state's step says (as recovery.instant.workflow words them).
STEPS = {
    "running": "Running from the backup",
    "migrating": "Moving disk web01_os to data2",
    "done": "Migrated",
    "discarding": "Removing storage domain instant-x",
    "discarded": "Discarded",
    "failed": "Starting VM web00-failed",
}


def make_estate(path, *, n: int = 0) -> dict:
    """The inventory of one engine, a VM of it and a complete point of that VM."""
    manager = Manager.objects.create(
        name=f"e{n}", api_url=f"https://e{n}.example/ovirt-engine/api", username="admin@internal"
    )
    dc = DataCenter.objects.create(manager=manager, engine_id=f"00000000-0000-0000-00dc-{n:012d}", name="Default")
    other = DataCenter.objects.create(manager=manager, engine_id=f"00000000-0000-0000-01dc-{n:012d}", name="Other")
    cluster = Cluster.objects.create(
        manager=manager, engine_id=f"00000000-0000-0000-00c1-{n:012d}", name="Production", data_center=dc
    )

    def domain(name, center, i, **fields):
        return StorageDomain.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-{i:04d}-{n:012d}", name=name, data_center=center, **fields
        )

    domain("data1", dc, 1, available_bytes=500 * GiB)
    domain("data2", dc, 2, storage_kind=StorageDomain.Kind.ISCSI, available_bytes=2 * 1024 * GiB)
    domain("elsewhere", other, 3)
    domain("instant-99", dc, 4)
    domain("exports", dc, 5, type=StorageDomain.Type.EXPORT)
    vm = VM.objects.create(
        manager=manager, engine_id=f"00000000-0000-0000-0000-{n:012d}", name=f"web{n:02d}", cluster=cluster
    )
    destination = BackupDestination.objects.create(name=f"d{n}", path=str(path))
    point = BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer", status="complete")
    return {"manager": manager, "dc": dc, "cluster": cluster, "vm": vm, "destination": destination, "point": point}


def make_instant(point: BackupPoint, status: str, **fields) -> InstantRestore:
    """An instant restore of `point` as it is in `status`, with what that state has filled in."""
    now = timezone.now()
    values = {
        "point": point,
        "vm": point.vm,
        "name": f"{point.vm.name}-{status}",
        "cluster": "Production",
        "node": settings.NODE_NAME,
        "status": status,
        "created": now - timedelta(hours=3),
        "who": "operator-user",
    }
    if status != InstantRestore.Status.BOOTING:
        values |= {
            "up_at": now - timedelta(hours=3) + timedelta(seconds=42.5),
            "seconds_to_up": 42.5,
            "directory": f"/backups/.instant/{status}",
            "share": f"127.0.0.1:/backups/.instant/{status}",
            "storage_domain_name": "instant-x",
            "vm_engine_id": "44444444-0000-0000-0000-000000000001",
            "disks": DISKS,
            "top_bytes": 3 * GiB // 2,
            "step": STEPS[status],
        }
    else:
        values["step"] = "Importing storage domain from 127.0.0.1:/backups/.instant/1"
    if status in (InstantRestore.Status.DONE, InstantRestore.Status.DISCARDED, InstantRestore.Status.FAILED):
        values |= {"ended": now - timedelta(hours=1), "tidied": status != InstantRestore.Status.FAILED}
    if status == InstantRestore.Status.FAILED:
        values |= {"error": "VM web00-failed went down instead of up (see the engine's events).", "seconds_to_up": None}
    values |= fields
    return InstantRestore.objects.create(**values)


def job_of(instant: InstantRestore, kind: str = "instant_restore", **fields) -> Job:
    return Job.objects.create(
        kind=kind, vm=instant.vm, name=f"{instant.name} (x)", params={"instant": instant.pk}, **fields
    )


def queued(kind: str, instant: InstantRestore) -> Job:
    (job,) = Job.objects.filter(kind=kind, params__instant=instant.pk)
    assert job.status == Job.Status.QUEUED
    return job


def audited(**filters) -> list[tuple[str, dict]]:
    actions = ("instant_restore_requested", "instant_migrate_requested", "instant_discard_requested")
    actions += ("restore_proof_requested",)
    return [(e.action, e.details) for e in AuditEvent.objects.filter(action__in=actions, **filters).order_by("pk")]
