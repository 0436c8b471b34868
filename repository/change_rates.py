"""How fast a VM's disks change, from its incremental backups: each holds exactly the data written since
its parent was taken (the engine's dirty bitmaps or changed-block lists say which), so its bytes over the
time since its parent is the VM's write rate over that span. The VM page charts it; the alerts app
flags a jump far above the VM's own usual (mass encryption, a runaway log)."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from repository.models import BackupPoint


@dataclass(frozen=True)
class ChangeSample:
    point_id: int
    started: datetime
    bytes_changed: int
    seconds: float  # since the parent point was taken
    destination_id: int

    @property
    def bytes_per_hour(self) -> float:
        return self.bytes_changed * 3600 / self.seconds if self.seconds > 0 else 0.0


def _incrementals():
    """The points that measure a change: complete incrementals on a parent, with the parent's start."""
    return (
        BackupPoint.objects.complete()
        .filter(type=BackupPoint.Type.INCREMENTAL, parent__isnull=False)
        .select_related("parent")
        .only("pk", "vm_id", "started", "bytes_transferred", "destination_id", "policy_id", "parent__started")
    )


def _sample(p: BackupPoint) -> ChangeSample:
    return ChangeSample(
        point_id=p.pk,
        started=p.started,
        bytes_changed=p.bytes_transferred,
        seconds=(p.started - p.parent.started).total_seconds(),
        destination_id=p.destination_id,
    )


def recent_histories(per_vm: int) -> dict[int, list[tuple[BackupPoint, ChangeSample]]]:
    """Every VM's newest `per_vm` change samples (oldest first), each with its point: one query,
    whatever the number of VMs (for the dashboard's list of VMs changing far above their usual)."""
    ranked = _incrementals().annotate(
        rank=Window(RowNumber(), partition_by=F("vm_id"), order_by=[F("started").desc(), F("pk").desc()])
    )
    histories: dict[int, list[tuple[BackupPoint, ChangeSample]]] = {}
    for p in ranked.filter(rank__lte=per_vm).order_by("vm_id", "started", "pk"):
        histories.setdefault(p.vm_id, []).append((p, _sample(p)))
    return histories


def change_history(vm_id: int, *, since: datetime | None = None, limit: int = 200) -> list[ChangeSample]:
    """The VM's complete incrementals, oldest first (the newest `limit`), as change samples. One query."""
    points = _incrementals().filter(vm_id=vm_id).order_by("-started")
    if since is not None:
        points = points.filter(started__gte=since)
    return [_sample(p) for p in points[:limit]][::-1]
