"""An estate of N VMs as database rows (bulk-created, no engine): for the tests that compare list
pages and endpoints at 10 and 1,000 VMs, and for bench/estate.py's figures."""

import datetime
import uuid

from django.utils import timezone

DISKS_PER_VM = 2
CLUSTERS = 5
TAGS = 20


def _uuid(kind: int, n: int) -> str:
    return str(uuid.UUID(int=(kind << 64) + n))


def build_estate(vms: int, *, destination_path: str, start: int = 0, manager=None):
    """`vms` VMs (numbered from `start`) with their disks, tags, a backup job and a backup point
    each, on one manager (made, with its clusters, hosts, domains, tags, policies and a
    destination, when `manager` is None). Returns the manager."""
    from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager, StorageDomain, Tag
    from policies.models import Policy
    from repository.models import BackupDestination

    if manager is None:
        manager = Manager.objects.create(
            name="estate", api_url="https://engine.example/ovirt-engine/api", username="admin@internal", password="x"
        )
        dc = DataCenter.objects.create(manager=manager, engine_id=_uuid(1, 0), name="dc")
        clusters = Cluster.objects.bulk_create(
            Cluster(manager=manager, engine_id=_uuid(2, n), name=f"cluster{n}", data_center=dc) for n in range(CLUSTERS)
        )
        Host.objects.bulk_create(
            Host(manager=manager, engine_id=_uuid(3, n), name=f"host{n}", address=f"h{n}", cluster=clusters[n % 5])
            for n in range(15)
        )
        StorageDomain.objects.bulk_create(
            StorageDomain(manager=manager, engine_id=_uuid(4, n), name=f"sd{n}", data_center=dc) for n in range(6)
        )
        Tag.objects.bulk_create(Tag(manager=manager, engine_id=_uuid(5, n), name=f"tag{n}") for n in range(TAGS))
        destination = BackupDestination.objects.create(name="estate", path=destination_path)
        for n in range(5):
            Policy.objects.create(name=f"policy{n}", destination=destination, match_tag=f"tag{n}")
    clusters = list(manager.cluster_set.order_by("name"))
    domains = list(manager.storagedomain_set.order_by("name"))
    tags = list(manager.tag_set.order_by("pk"))
    destination = BackupDestination.objects.get(name="estate")
    rows = VM.objects.bulk_create(
        VM(
            manager=manager,
            engine_id=_uuid(6, n),
            name=f"vm{n:05d}",
            cluster=clusters[n % CLUSTERS],
            status="down",
            os_type="rhel_9x64",
        )
        for n in range(start, start + vms)
    )
    VM.tags.through.objects.bulk_create(
        VM.tags.through(vm_id=vm.pk, tag_id=tags[n % TAGS].pk) for n, vm in enumerate(rows, start)
    )
    disks = Disk.objects.bulk_create(
        Disk(
            manager=manager,
            engine_id=_uuid(7, n * DISKS_PER_VM + d),
            name=f"vm{n:05d}_disk{d}",
            vm=vm,
            storage_domain=domains[(n + d) % len(domains)],
            provisioned_size=10 * 2**30,
            bootable=d == 0,
        )
        for n, vm in enumerate(rows, start)
        for d in range(DISKS_PER_VM)
    )
    add_history(rows, disks, destination)
    return manager


def add_history(vms: list, disks: list, destination) -> None:
    """A succeeded backup job and a complete backup point (with its disks') for each VM; `disks`
    are the VMs' disks, grouped by VM in the order of `vms`."""
    from jobs.models import Job
    from repository.models import BackupPoint, DiskBackup

    finished = timezone.now() - datetime.timedelta(hours=1)
    jobs = Job.objects.bulk_create(
        (Job(kind="backup", vm=vm, name=vm.name, status=Job.Status.SUCCEEDED, finished=finished) for vm in vms),
        batch_size=500,
    )
    points = BackupPoint.objects.bulk_create(
        (
            BackupPoint(
                vm=vm,
                destination=destination,
                job=job,
                strategy="image_transfer",
                status=BackupPoint.Status.COMPLETE,
                finished=finished,
            )
            for vm, job in zip(vms, jobs, strict=True)
        ),
        batch_size=500,
    )
    point_of = {point.vm_id: point for point in points}
    DiskBackup.objects.bulk_create(
        (DiskBackup(point=point_of[disk.vm_id], disk=disk, file=f"{disk.engine_id}.qcow2") for disk in disks),
        batch_size=500,
    )
