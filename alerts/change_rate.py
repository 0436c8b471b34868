"""The change-rate alert: a VM whose disks suddenly change far faster than their own usual, as when
ransomware encrypts them or a log runs away.

Each complete incremental holds what the VM wrote since its parent (repository.change_rates), so its
bytes over that span are the VM's write rate then. The latest rate is compared with the median of
the VM's previous ones (a median, so one earlier spike does not raise the usual): flagged when it is
more than the policy's factor (Policy.change_rate_factor) times the usual, the VM has enough history
to have a usual, and the rate is above an absolute floor (settings.ALERT_CHANGE_RATE_FLOOR), so a
tiny VM going from 1 to 10 MiB is no news. Judged after each backup (alerts.events) and for the
dashboard's list of VMs flagged now (flagged_vms)."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from statistics import median

from django.conf import settings

from core.formats import duration, iec
from repository.change_rates import ChangeSample, change_history, recent_histories
from repository.models import BackupPoint

USUAL_SAMPLES = 10  # the usual is the median of this many incrementals before the latest
MIN_SAMPLES = 5  # fewer earlier incrementals than this: no usual yet, never flagged


@dataclass(frozen=True)
class UnusualChange:
    """A VM's latest incremental that tripped the rule, with the figures that did."""

    vm_id: int
    vm_name: str
    point_id: int
    started: datetime
    bytes_changed: int
    seconds: float  # the span the bytes were written in: since the parent point
    bytes_per_hour: float
    usual_bytes_per_hour: float  # the median of the `samples` before it
    samples: int
    factor: float  # the policy's threshold

    @property
    def ratio(self) -> float | None:
        """How many times the usual; None when the usual is nothing at all."""
        return self.bytes_per_hour / self.usual_bytes_per_hour if self.usual_bytes_per_hour else None

    @property
    def times_usual(self) -> str:
        return f"{self.ratio:.1f}x" if self.ratio is not None else "far above"

    @property
    def sentence(self) -> str:
        """ "app01 wrote 48.2 GiB/h in the 6 h before backup 812, 9.6x its usual 5.0 GiB/h (median of the last 10)" """
        return (
            f"{self.vm_name} wrote {iec(self.bytes_per_hour)}/h in the {duration(self.seconds)} before backup "
            f"{self.point_id}, {self.times_usual} its usual {iec(self.usual_bytes_per_hour)}/h "
            f"(median of the last {self.samples})"
        )

    def figures(self) -> dict:
        """For the alert's details (the e-mail lists them, the webhook sends them)."""
        return {
            "point": self.point_id,
            "bytes_changed": self.bytes_changed,
            "hours": round(self.seconds / 3600, 2),
            "bytes_per_hour": round(self.bytes_per_hour),
            "usual_bytes_per_hour": round(self.usual_bytes_per_hour),
            "times_usual": round(self.ratio, 1) if self.ratio is not None else None,
            "samples": self.samples,
            "threshold_factor": self.factor,
        }


def judge_change(
    samples: list[ChangeSample],
    *,
    factor: Decimal | float | None,
    vm_id: int = 0,
    vm_name: str = "",
    floor: float | None = None,
) -> UnusualChange | None:
    """Whether the newest of these samples (oldest first) is far above the usual of those before it.
    No factor (the policy's setting left empty) judges nothing."""
    if not factor or len(samples) < MIN_SAMPLES + 1:
        return None
    floor = settings.ALERT_CHANGE_RATE_FLOOR if floor is None else floor
    latest, earlier = samples[-1], samples[-1 - USUAL_SAMPLES : -1]
    rate = latest.bytes_per_hour
    usual = median(s.bytes_per_hour for s in earlier)
    if rate < floor or rate <= float(factor) * usual:
        return None
    return UnusualChange(
        vm_id=vm_id,
        vm_name=vm_name,
        point_id=latest.point_id,
        started=latest.started,
        bytes_changed=latest.bytes_changed,
        seconds=latest.seconds,
        bytes_per_hour=rate,
        usual_bytes_per_hour=usual,
        samples=len(earlier),
        factor=float(factor),
    )


def judge_point(point: BackupPoint) -> UnusualChange | None:
    """Judge a VM's new incremental against its history before it, under the policy that made it."""
    if point.type != BackupPoint.Type.INCREMENTAL or point.policy is None:
        return None
    history = [s for s in change_history(point.vm_id, limit=USUAL_SAMPLES + 20) if s.started <= point.started]
    if not history or history[-1].point_id != point.pk:
        return None  # not a complete incremental with a parent: nothing measured
    return judge_change(history, factor=point.policy.change_rate_factor, vm_id=point.vm_id, vm_name=point.vm.name)


def flagged_vms() -> list[UnusualChange]:
    """The VMs whose latest incremental is far above their usual, the highest ratio first; for the
    dashboard. Two queries, whatever the number of VMs: the histories, then the latest points' VM
    names and policies' factors."""
    histories = recent_histories(USUAL_SAMPLES + 1)
    latest = {vm_id: rows[-1][0].pk for vm_id, rows in histories.items()}
    judged_by = {
        row["pk"]: row
        for row in BackupPoint.objects.filter(pk__in=latest.values()).values(
            "pk", "vm__name", "policy__change_rate_factor"
        )
    }
    flagged = []
    for vm_id, rows in histories.items():
        about = judged_by[latest[vm_id]]
        found = judge_change(
            [sample for _, sample in rows],
            factor=about["policy__change_rate_factor"],
            vm_id=vm_id,
            vm_name=about["vm__name"],
        )
        if found is not None:
            flagged.append(found)
    return sorted(flagged, key=lambda f: (-(f.ratio or float("inf")), f.vm_name))
