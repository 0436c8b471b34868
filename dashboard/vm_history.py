"""A VM's backups as its page shows them: chains (a full and the incrementals on it, per destination
and strategy), what its kept backups take on their destinations over time, and how fast its disks
change between backups."""

from dataclasses import dataclass, field

from django.urls import NoReverseMatch, reverse

from core.formats import duration, iec, label, when
from dashboard.vm_charts import Sample
from repository.change_rates import ChangeSample, change_history
from repository.models import BackupDestination, BackupPoint

CHAIN_POINTS = 200  # the newest kept points a VM page draws its chains and storage from


def point_url(point: BackupPoint) -> str:
    """The backup's own page when the site has one, else its row in the VM page's table."""
    try:
        return reverse("point-detail", args=[point.pk])
    except NoReverseMatch:
        return f"#point-{point.pk}"


@dataclass
class ChainGroup:
    """The points of one (destination, strategy): each chain a full and its incrementals, in order."""

    destination: BackupDestination
    strategy: str
    chains: list[list[BackupPoint]] = field(default_factory=list)

    @property
    def strategy_label(self) -> str:
        return label(self.strategy, "strategy")


def kept_points(vm_id: int) -> list[BackupPoint]:
    """The VM's newest kept (complete or damaged) and running points, oldest first, each with its `url`."""
    points = list(
        BackupPoint.objects.filter(
            vm_id=vm_id,
            status__in=[BackupPoint.Status.COMPLETE, BackupPoint.Status.DAMAGED, BackupPoint.Status.RUNNING],
        )
        .select_related("destination")
        .order_by("-started", "-pk")[:CHAIN_POINTS]
    )[::-1]
    for p in points:
        p.url = point_url(p)
    return points


def chains_of(points: list[BackupPoint]) -> list[ChainGroup]:
    """Points (oldest first) grouped into chains: an incremental joins its parent's chain; a full, or
    an incremental whose parent is gone from the list, starts one. Groups and chains newest first."""
    groups: dict[tuple[int, str], ChainGroup] = {}
    chain_of: dict[int, list[BackupPoint]] = {}
    for p in points:
        group = groups.setdefault((p.destination_id, p.strategy), ChainGroup(p.destination, p.strategy))
        chain = chain_of.get(p.parent_id) if p.type == BackupPoint.Type.INCREMENTAL else None
        if chain is None:
            chain = []
            group.chains.append(chain)
        chain.append(p)
        chain_of[p.pk] = chain
    found = list(groups.values())[::-1]
    for group in found:
        group.chains.reverse()
    return sorted(found, key=lambda g: g.chains[0][-1].started, reverse=True)


def storage_samples(points: list[BackupPoint]) -> list[Sample]:
    """What the VM's kept backups take on their destinations, summed as each was written (oldest first)."""
    total, samples = 0, []
    for p in points:
        if p.status == BackupPoint.Status.RUNNING:
            continue
        total += p.bytes_stored
        samples.append(
            Sample(p.started, total, f"#{p.pk}, {when(p.started)}: {iec(total)} in all (+{iec(p.bytes_stored)})")
        )
    return samples


def change_samples(vm_id: int) -> tuple[list[ChangeSample], list[Sample]]:
    """Its change rate per incremental backup (bytes written since the parent, per hour)."""
    history = change_history(vm_id)
    samples = [
        Sample(
            s.started,
            s.bytes_per_hour,
            f"#{s.point_id}, {when(s.started)}: {iec(s.bytes_changed)} in {duration(s.seconds)}, "
            f"{iec(s.bytes_per_hour)} per hour",
        )
        for s in history
    ]
    return history, samples
