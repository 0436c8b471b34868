"""Is each VM's newest good backup recent enough? Its recovery point objective (RPO), derived from the
schedule of the policy that covers it, and each VM's status against it: for the dashboard's
protection answer, the inventory's RPO column and its `?rpo=` filter.

A policy has no RPO field: its RPO is the longest gap between two consecutive times of its schedule
(a daily 01:00: 24 h; "0 1 * * 1-5": 72 h over the weekend), plus a grace for the backup itself to
be taken: GRACE, and the length of the policy's backup window when it has one (a job may start as
late as the window's end). A daily policy with no window: 26 h.

A VM (of the queryset given, usually the present ones) is, in this order:
- UNCOVERED: no enabled policy covers it (policies.coverage decides, as everywhere);
- FAILING: its last backup attempt (the newest backup job that succeeded or failed; cancelled and
  skipped ones are no attempt) failed, whatever older good backup it has;
- OK: its newest good (complete) backup was taken within its covering policy's RPO (the point's
  start: the moment its data is from);
- STALE: otherwise (an older good backup, or none at all).
"""

from datetime import datetime, timedelta
from functools import lru_cache

from croniter import croniter
from django.db import models
from django.utils import timezone

from core.formats import register_labels
from inventory.models import VM
from jobs.models import Job
from policies.coverage import Rule, rules, with_coverage
from policies.models import Policy
from repository.models import BackupPoint
from strategies.backup import BACKUP

OK, STALE, FAILING, UNCOVERED = "ok", "stale", "failing", "uncovered"
STATUSES = (OK, STALE, FAILING, UNCOVERED)
LABELS = {
    OK: "Backed up within the RPO",
    STALE: "Stale (no good backup within the RPO)",
    FAILING: "Failing (last backup failed)",
    UNCOVERED: "Not covered by any policy",
}
register_labels("rpo", LABELS)

GRACE = timedelta(hours=2)  # for the backup to be taken once its time has come
# Gaps are read over this much of the schedule, at most this many times (a yearly schedule's one
# gap needs a year; an every-minute schedule's shows in its first times).
HORIZON = timedelta(days=400)
MAX_TIMES = 5000
# A fixed Monday at midnight: gaps are a property of the schedule, not of today (cached per schedule).
REFERENCE = datetime(2026, 1, 5)


@lru_cache(maxsize=256)
def longest_gap(schedule: str) -> timedelta:
    """The longest time between two consecutive times of a cron schedule, read on the wall clock
    (a change of the clocks moves a gap by an hour at most: GRACE covers it)."""
    times = croniter(schedule, REFERENCE)
    previous = times.get_next(datetime)
    gap = timedelta(0)
    for _ in range(MAX_TIMES):
        moment = times.get_next(datetime)
        gap = max(gap, moment - previous)
        if moment - REFERENCE > HORIZON:
            break
        previous = moment
    return gap


def rpo_of(policy: Policy) -> timedelta:
    """The policy's RPO: its schedule's longest gap, GRACE, and its backup window's length."""
    rpo = longest_gap(policy.schedule) + GRACE
    if policy.window_start is not None and policy.window_end is not None:
        start = datetime.combine(REFERENCE, policy.window_start)
        end = datetime.combine(REFERENCE, policy.window_end)
        rpo += end - start if end > start else end + timedelta(days=1) - start
    return rpo


def rpo_status_of_vms(
    vms: models.QuerySet[VM], *, now: datetime | None = None, policy_rules: list[Rule] | None = None
) -> models.QuerySet[VM]:
    """The VMs annotated (one query when evaluated, whatever their number; two or three to build it:
    the enabled policies and their explicit VMs, as policies.coverage.rules) with:

    - covering_policy_id, coverage_reason, protected: as policies.coverage.with_coverage;
    - last_good_backup: when the newest complete backup point was started (None: none);
    - last_attempt_status ("succeeded", "failed" or None), last_attempt_error, last_attempt_job
      (its id), last_attempt_time (when it ended): the newest backup job that succeeded or failed;
    - rpo_status: OK, STALE, FAILING or UNCOVERED, as the module says.

    Filter with `.filter(rpo_status=STALE)`; count with `rpo_counts`. The RPO of a row is
    `rpo_of(policy)` of its covering policy."""
    now = now or timezone.now()
    policy_rules = rules() if policy_rules is None else policy_rules
    good = BackupPoint.objects.filter(vm=models.OuterRef("pk"), status=BackupPoint.Status.COMPLETE)
    attempts = Job.objects.filter(
        vm=models.OuterRef("pk"), kind=BACKUP, status__in=[Job.Status.SUCCEEDED, Job.Status.FAILED]
    ).order_by("-finished", "-pk")
    within = [
        models.When(
            models.Q(covering_policy_id=r.policy.pk, last_good_backup__gte=now - rpo_of(r.policy)),
            then=models.Value(OK),
        )
        for r in policy_rules
    ]
    return (
        with_coverage(vms, policy_rules=policy_rules)
        .annotate(
            last_good_backup=models.Subquery(good.order_by("-started").values("started")[:1]),
            last_attempt_status=models.Subquery(attempts.values("status")[:1]),
            last_attempt_error=models.Subquery(attempts.values("error")[:1]),
            last_attempt_job=models.Subquery(attempts.values("pk")[:1]),
            last_attempt_time=models.Subquery(attempts.values("finished")[:1]),
        )
        .annotate(
            rpo_status=models.Case(
                models.When(covering_policy_id__isnull=True, then=models.Value(UNCOVERED)),
                models.When(last_attempt_status=Job.Status.FAILED, then=models.Value(FAILING)),
                *within,
                default=models.Value(STALE),
                output_field=models.CharField(),
            )
        )
    )


def rpo_counts(vms: models.QuerySet[VM], *, now: datetime | None = None) -> dict[str, int]:
    """How many of the VMs are in each status (one query, and those rpo_status_of_vms needs)."""
    annotated = rpo_status_of_vms(vms, now=now)
    return annotated.aggregate(
        **{status: models.Count("pk", filter=models.Q(rpo_status=status)) for status in STATUSES}
    )


def rpo_counts_by_policy(vms: models.QuerySet[VM], *, now: datetime | None = None) -> dict[int | None, dict[str, int]]:
    """For each covering policy (None: the uncovered VMs), how many of its VMs are in each status
    (one query, and those rpo_status_of_vms needs)."""
    counts: dict[int | None, dict[str, int]] = {}
    rows = (
        rpo_status_of_vms(vms, now=now)
        .values("covering_policy_id", "rpo_status")
        .annotate(n=models.Count("pk"))
        .order_by()
    )
    for policy_id, status, n in rows.values_list("covering_policy_id", "rpo_status", "n"):
        counts.setdefault(policy_id, dict.fromkeys(STATUSES, 0))[status] += n
    return counts
