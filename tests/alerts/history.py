"""Generated change histories: a VM's incrementals every `hours` hours at a known usual write rate
(with noise around it), then whatever comes last. Rows only, no engine."""

import itertools
from datetime import datetime, timedelta

from django.utils import timezone

from inventory.models import VM, Manager
from jobs.models import Job
from repository.models import BackupPoint

GiB, MiB = 2**30, 2**20
# Around the usual rate, with the median of every run of 10 exactly 1 (five below, five above).
NOISE = (0.9, 1.1, 0.95, 1.05, 0.8, 1.2, 0.85, 1.15, 0.97, 1.03)


def make_vm(name: str) -> VM:
    manager = Manager.objects.first() or Manager.objects.create(
        name="engine", api_url="https://engine.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    return VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-{VM.objects.count():012d}", name=name)


def make_history(
    vm: VM,
    *,
    policy,
    usual: float,
    days: int = 30,
    hours: int = 6,
    start: datetime | None = None,
) -> list[BackupPoint]:
    """A full `days` ago, then an incremental every `hours` hours until now, each holding `usual`
    bytes per hour times the noise. Returns the points, oldest first."""
    now = timezone.now()
    started = start or now - timedelta(days=days)
    full = BackupPoint.objects.create(
        vm=vm,
        destination=policy.destination,
        policy=policy,
        strategy="cbt",
        type=BackupPoint.Type.FULL,
        status=BackupPoint.Status.COMPLETE,
        started=started,
        bytes_transferred=40 * GiB,
    )
    points = [full]
    noise = itertools.cycle(NOISE)
    while started + timedelta(hours=2 * hours) <= now:
        started += timedelta(hours=hours)
        points.append(add_incremental(points[-1], bytes_per_hour=usual * next(noise), hours=hours))
    return points


def add_incremental(parent: BackupPoint, *, bytes_per_hour: float, hours: float, job: Job | None = None) -> BackupPoint:
    """The next complete incremental of the parent's chain, `hours` after it, at that write rate."""
    return BackupPoint.objects.create(
        vm=parent.vm,
        destination=parent.destination,
        policy=parent.policy,
        job=job,
        strategy=parent.strategy,
        type=BackupPoint.Type.INCREMENTAL,
        parent=parent,
        status=BackupPoint.Status.COMPLETE,
        started=parent.started + timedelta(hours=hours),
        bytes_transferred=round(bytes_per_hour * hours),
    )


def finish_backup(parent: BackupPoint, *, bytes_per_hour: float, hours: float = 6) -> BackupPoint:
    """A backup job of the policy that ends succeeded with one more incremental: what alerts hear."""
    job = Job.objects.create(kind="backup", name=parent.vm.name, vm=parent.vm, started_by=parent.policy)
    job.start()
    point = add_incremental(parent, bytes_per_hour=bytes_per_hour, hours=hours, job=job)
    job.succeed()
    return point
