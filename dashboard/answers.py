"""The dashboard's answers to the morning questions: is everything protected, did last night work, how
much room is left, what runs next. Each is computed in a fixed number of queries, whatever the
number of VMs, jobs and backups, and each names the filtered list behind it (the links' query
parameters are the lists' own: /inventory/?rpo=, /jobs/?status=&kind=&since=&policy=,
/backups/?status=&destination=)."""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from core.charts import Chart, Series, line_chart, stacked_bars
from core.formats import plural
from inventory.models import VM
from jobs.models import Job
from policies import rpo
from policies.models import Policy
from repository.models import BackupDestination, BackupPoint
from strategies.backup import BACKUP

DAY = timedelta(days=1)
CHARTED = (Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.SKIPPED)
FAILURES_SHOWN = 5  # per policy in the last 24 hours; the link lists them all
NEXT_RUNS_SHOWN = 8
GROWTH_DAYS = 30


def _days(now: datetime, n: int) -> list[date]:
    """The last `n` calendar days in the site's time zone, today last."""
    today = timezone.localdate(now)
    return [today - timedelta(days=i) for i in range(n - 1, -1, -1)]


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def protection(*, now: datetime) -> dict:
    """How many present VMs are in each RPO status (policies.rpo), and per covering policy."""
    by_policy = rpo.rpo_counts_by_policy(VM.objects.filter(missing_since=None), now=now)
    totals = dict.fromkeys(rpo.STATUSES, 0)
    for counts in by_policy.values():
        for status, n in counts.items():
            totals[status] += n
    rows = [
        {"status": s, "label": rpo.LABELS[s], "count": totals[s], "bad": s in (rpo.STALE, rpo.FAILING) and totals[s]}
        for s in rpo.STATUSES
    ]
    return {"total": sum(totals.values()), "counts": totals, "rows": rows, "by_policy": by_policy}


@dataclass
class PolicyDay:
    """One policy's backups of the last 24 hours: each VM's newest backup job under it."""

    policy: Policy
    vms: int = 0
    ok: int = 0
    active: int = 0
    failed: list[dict] = field(default_factory=list)  # vm, vm_id, job, error
    skipped: int = 0
    cancelled: int = 0

    @property
    def failures_shown(self) -> list[dict]:
        return self.failed[:FAILURES_SHOWN]

    @property
    def failures_more(self) -> int:
        return max(len(self.failed) - FAILURES_SHOWN, 0)

    @property
    def summary(self) -> str:
        """ "nightly-prod: 11 of 12 VMs OK" """
        return f"{self.policy.name}: {self.ok} of {plural(self.vms, 'VM')} OK"


def last_day(*, now: datetime, policies: list[Policy]) -> list[PolicyDay]:
    """Per policy, the VMs backed up under it in the last 24 hours and how their newest job ended:
    enabled policies, and any other that ran then (one query)."""
    policy_type = ContentType.objects.get_for_model(Policy)
    jobs = Job.objects.filter(kind=BACKUP, started_by_type=policy_type, created__gte=now - DAY).exclude(vm=None)
    newer = jobs.filter(
        vm=models.OuterRef("vm"), started_by_id=models.OuterRef("started_by_id"), pk__gt=models.OuterRef("pk")
    )
    newest = (
        jobs.exclude(models.Exists(newer))
        .order_by("vm__name", "pk")
        .values_list("started_by_id", "vm_id", "vm__name", "status", "error", "pk")
    )
    by_id = {p.pk: PolicyDay(p) for p in policies}
    for policy_id, vm_id, vm_name, status, error, pk in newest:
        day = by_id.get(policy_id)
        if day is None:
            continue  # a deleted policy's jobs point at nothing (policies.models.forget_deleted_policy)
        day.vms += 1
        if status == Job.Status.SUCCEEDED:
            day.ok += 1
        elif status == Job.Status.FAILED:
            day.failed.append({"vm": vm_name, "vm_id": vm_id, "job": pk, "error": error})
        elif status == Job.Status.SKIPPED:
            day.skipped += 1
        elif status == Job.Status.CANCELLED:
            day.cancelled += 1
        else:
            day.active += 1
    return [d for d in by_id.values() if d.policy.enabled or d.vms]


def job_charts(*, now: datetime) -> dict:
    """Backup jobs per day (by the day they were queued, in the site's time zone) that succeeded,
    failed or were skipped, over 7 and 30 days as stacked bars, and the totals of the last 7 and 30
    days counted as the jobs list's `since=7d|30d` counts them (two queries)."""
    days = _days(now, 30)
    backups = Job.objects.filter(kind=BACKUP, status__in=CHARTED)
    per_day = (
        backups.filter(created__gte=_midnight(days[0]))
        .annotate(day=TruncDate("created", tzinfo=timezone.get_current_timezone()))
        .values("day", "status")
        .annotate(n=models.Count("pk"))
        .order_by()
    )
    counts = {(day, status): n for day, status, n in per_day.values_list("day", "status", "n")}
    window = {
        f"{n}d_{s}": models.Count("pk", filter=models.Q(status=s, created__gte=now - timedelta(days=n)))
        for n in (7, 30)
        for s in CHARTED
    }
    totals = backups.filter(created__gte=now - timedelta(days=30)).aggregate(**window)
    charts = {}
    for n in (7, 30):
        shown = days[-n:]
        series = [Series(s, s.label, [counts.get((d, s.value), 0) for d in shown]) for s in CHARTED]
        charts[n] = {
            "chart": stacked_bars(
                labels=[f"{d:%m-%d}" for d in shown],
                full_labels=[f"{d:%Y-%m-%d}" for d in shown],
                series=series,
                title=f"Backup jobs per day, last {n} days",
                desc=f"Backup jobs that succeeded, failed or were skipped on each of the last {n} days "
                "(by the day they were queued, in the site's time zone).",
                css_class="jobs-per-day",
            ),
            "since": f"{n}d",
            "totals": [{"status": s.value, "label": s.label, "count": totals[f"{n}d_{s}"]} for s in CHARTED],
        }
    return charts


@dataclass
class DestinationUse:
    destination: BackupDestination
    used: int  # bytes of its kept backups: its own use, not the filesystem's
    growth: int  # bytes added over GROWTH_DAYS by the backups kept now
    chart: Chart
    damaged: int

    @property
    def per_day(self) -> float:
        return self.growth / GROWTH_DAYS

    @property
    def days_until_full(self) -> float | None:
        """At the growth of the last GROWTH_DAYS days; None when it does not grow or its free space
        is not known."""
        if self.per_day <= 0 or self.destination.free_bytes is None:
            return None
        return self.destination.free_bytes / self.per_day


def storage(*, now: datetime) -> list[DestinationUse]:
    """Each destination's use by its kept backups, over the last GROWTH_DAYS days as a chart, and its
    filesystem's free space (two queries). The past is rebuilt from the backups kept now, by the
    day each finished: a deleted backup's row is removed with its files, so what retention freed is
    not known, and the growth shown is what the kept backups added (an upper bound while retention
    deletes)."""
    # Their own use as the destinations' page counts it (BackupDestinationQuerySet.with_usage).
    destinations = list(
        BackupDestination.objects.with_usage()
        .annotate(damaged=models.Count("points", filter=models.Q(points__status=BackupPoint.Status.DAMAGED)))
        .order_by("name")
    )
    kept = BackupPoint.objects.kept()
    days = _days(now, GROWTH_DAYS)
    added_rows = (
        kept.annotate(at=Coalesce("finished", "started"))
        .filter(at__gte=_midnight(days[0]))
        .annotate(day=TruncDate("at", tzinfo=timezone.get_current_timezone()))
        .values("destination", "day")
        .annotate(n=models.Sum("bytes_stored"))
        .order_by()
    )
    added: dict[int, dict[date, int]] = {}
    for destination_id, day, n in added_rows.values_list("destination", "day", "n"):
        added.setdefault(destination_id, {})[day] = n or 0
    found = []
    for d in destinations:
        total = d.backup_bytes
        daily = added.get(d.pk, {})
        # The use at each day's end: today's less what was added after that day.
        values, after = [], 0
        for day in reversed(days):
            values.append(total - after)
            after += daily.get(day, 0)
        values.reverse()
        chart = line_chart(
            labels=[f"{day:%m-%d}" for day in days],
            full_labels=[f"{day:%Y-%m-%d}" for day in days],
            series=Series("used", "Used by backups", values),
            title=f"{d.name}: used by backups, last {GROWTH_DAYS} days",
            desc=f"The bytes of the backups destination {d.name} keeps, at the end of each day, rebuilt from "
            "the kept backups' finish times (deleted backups are not known).",
            css_class="destination-growth",
        )
        found.append(DestinationUse(d, total, after, chart, d.damaged))
    return found


def next_runs(*, now: datetime, policies: list[Policy], covered: dict[int | None, dict[str, int]]) -> list[dict]:
    """The enabled policies' next scheduled runs, soonest first (the ticker's own cron reading)."""
    runs = [
        {"policy": p, "at": p.next_run(after=now), "vms": sum(covered.get(p.pk, {}).values()), "rpo": rpo.rpo_of(p)}
        for p in policies
        if p.enabled
    ]
    for run in runs:
        # A policy saved before windows were checked against schedules may run where its window is not:
        # the scheduler starts no such run, and the dashboard says so rather than promise it.
        policy = run["policy"]
        windowed = policy.window_start is not None and policy.window_end is not None
        run["outside_window"] = windowed and policy.window_end_after(run["at"]) is None
    return sorted(runs, key=lambda r: (r["at"], r["policy"].name))[:NEXT_RUNS_SHOWN]
