"""How fast a VM's disks change, from its incremental backups: each holds exactly the data written since
its parent was taken (the engine's dirty bitmaps or changed-block lists say which), so its bytes over the
time since its parent is the VM's write rate over that span. The VM page charts it; the alerts app
flags a jump far above the VM's own usual (mass encryption, a runaway log)."""

from dataclasses import dataclass
from datetime import datetime

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


def change_history(vm_id: int, *, since: datetime | None = None, limit: int = 200) -> list[ChangeSample]:
    """The VM's complete incrementals, oldest first (the newest `limit`), as change samples. One query."""
    points = (
        BackupPoint.objects.complete()
        .filter(vm_id=vm_id, type=BackupPoint.Type.INCREMENTAL, parent__isnull=False)
        .select_related("parent")
        .only("pk", "started", "bytes_transferred", "destination_id", "parent__started")
        .order_by("-started")
    )
    if since is not None:
        points = points.filter(started__gte=since)
    samples = [
        ChangeSample(
            point_id=p.pk,
            started=p.started,
            bytes_changed=p.bytes_transferred,
            seconds=(p.started - p.parent.started).total_seconds(),
            destination_id=p.destination_id,
        )
        for p in points[:limit]
    ]
    return samples[::-1]
