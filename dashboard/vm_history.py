"""A VM's backups as its page shows them: chains (a full and the incrementals on it, per destination
and strategy), what its kept backups take on their destinations over time, and how fast its disks
change between backups."""

from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate

from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from core.charts import Chart, Column, Series, line_chart, stacked_bars
from core.formats import duration, iec, label, when
from repository.change_rates import change_history
from repository.models import BackupDestination, BackupPoint

CHAIN_POINTS = 200  # the newest kept points a VM page draws its chains and storage from
CHART_WIDTH = 480  # two charts side by side: narrower than the dashboard's, so their text is drawn larger


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
        chain = chain_of.get(p.parent_id) if p.type == BackupPoint.Type.INCREMENTAL else None
        if chain is None:  # a chain's group is its first point's (an incremental may name another strategy)
            chain = []
            key = (p.destination_id, p.strategy)
            groups.setdefault(key, ChainGroup(p.destination, p.strategy)).chains.append(chain)
        chain.append(p)
        chain_of[p.pk] = chain
    found = list(groups.values())[::-1]
    for group in found:
        group.chains.reverse()
    return sorted(found, key=lambda g: g.chains[0][-1].started, reverse=True)


def _axis_label(at: datetime) -> str:
    """A backup's date under the chart's axis (the site's time zone); its number and time are in
    the mark's title and the table."""
    return f"{timezone.localtime(at):%m-%d}"


def storage_chart(points: list[BackupPoint], *, vm_name: str) -> Chart:
    """What the VM's kept backups take on their destinations, summed as each was written (oldest first),
    a point per backup; the table has each backup's own size beside the running total."""
    kept = [p for p in points if p.status != BackupPoint.Status.RUNNING]
    totals = list(accumulate(p.bytes_stored for p in kept))
    return line_chart(
        labels=[_axis_label(p.started) for p in kept],
        full_labels=[f"#{p.pk}, {when(p.started)}" for p in kept],
        series=Series("stored", "Stored in all", totals),
        more=[Column("This backup", [iec(p.bytes_stored) for p in kept])],
        title=f"Storage used by {vm_name}'s backups",
        desc="What its kept backups take on their destinations, summed as each was written: "
        f"{iec(totals[-1]) if totals else 'nothing yet'}.",
        width=CHART_WIDTH,
        css_class="vm-storage",
    )


def per_hour(n: float) -> str:
    """A rate in bytes per hour: 1.0 MiB/h."""
    return f"{iec(n)}/h"


def change_chart(vm_id: int, *, vm_name: str) -> Chart:
    """Its change rate per incremental backup (bytes written since the parent, per hour), a bar per
    backup; the table has the bytes and the time they were written in."""
    history = change_history(vm_id)
    return stacked_bars(
        labels=[_axis_label(s.started) for s in history],
        full_labels=[f"#{s.point_id}, {when(s.started)}" for s in history],
        series=[Series("change-rate", "Change rate", [s.bytes_per_hour for s in history])],
        fmt=per_hour,
        base=1024,
        more=[
            Column("Changed", [iec(s.bytes_changed) for s in history]),
            Column("Since the one before", [duration(s.seconds) for s in history]),
        ],
        title=f"Change rate of {vm_name} per backup",
        desc="Bytes written to its disks between one backup and the next, per hour, from its incrementals.",
        width=CHART_WIDTH,
        css_class="vm-change-rate",
    )
