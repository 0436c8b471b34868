"""Whether each VM has a good backup recent enough: its recovery point objective (RPO), as its
covering policy's schedule implies it.

A policy's RPO is the longest gap between two consecutive runs of its schedule (policies.cron, the
code that schedules them: a weekday-only schedule has a three-day gap over the weekend) plus a
quarter for grace (a run takes time, and may wait for slots). A VM is
- uncovered: no enabled policy covers it;
- failing: its last backup attempt (the newest ended backup job) failed;
- stale: its newest complete backup is older than its policy's RPO, or it has none;
- ok otherwise.

One annotated queryset, so lists filter and page on the status in the database. (Its names are
those of the dashboard's policies/rpo.py, written at the same time: either serves the other's pages.)"""

from datetime import datetime, timedelta
from functools import lru_cache

from django.db import models
from django.utils import timezone

from core.formats import register_labels
from inventory.models import VM
from jobs.models import Job
from policies import cron
from policies.coverage import Rule, rules, with_coverage
from policies.models import Policy
from repository.models import BackupPoint
from strategies.backup import BACKUP

GRACE = 0.25
# Enough runs to meet every gap of a schedule (a weekly one's runs over two years, a five-minute
# one's over eight hours), few enough to take milliseconds; and no further than a year ahead.
SAMPLE_RUNS = 100
SAMPLE_SPAN = timedelta(days=366)


OK, STALE, FAILING, UNCOVERED = "ok", "stale", "failing", "uncovered"
STATUSES = (OK, STALE, FAILING, UNCOVERED)
LABELS = {
    OK: "Backed up within the RPO",
    STALE: "Stale (no good backup within the RPO)",
    FAILING: "Failing (last backup failed)",
    UNCOVERED: "Not covered by any policy",
}
register_labels("rpo", LABELS)


@lru_cache(maxsize=512)
def _longest_gap(schedule: str, tz_name: str, start: datetime) -> timedelta:
    tz = timezone.get_current_timezone()
    at = cron.next_time(schedule, after=start, tz=tz)
    longest = timedelta(0)
    for _ in range(SAMPLE_RUNS):
        following = cron.next_time(schedule, after=at, tz=tz)
        longest = max(longest, following - at)
        at = following
        if at - start > SAMPLE_SPAN:
            break
    return longest


def longest_gap(schedule: str, *, now: datetime | None = None) -> timedelta:
    """The longest time between two consecutive runs of a cron schedule in the site's time zone
    (from the start of today, so a day's requests share one answer)."""
    now = now or timezone.now()
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return _longest_gap(schedule, timezone.get_current_timezone_name(), start)


def rpo_of(policy: Policy, *, now: datetime | None = None) -> timedelta:
    """The age a VM's newest good backup may reach under this policy before it is stale."""
    return longest_gap(policy.schedule, now=now) * (1 + GRACE)


def _term(rule: Rule) -> models.Q:
    return rule.explicit if rule.auto is None else rule.explicit | rule.auto


def rpo_status_of_vms(
    vms: models.QuerySet[VM], *, now: datetime | None = None, policy_rules: list[Rule] | None = None
) -> models.QuerySet[VM]:
    """The VMs annotated with coverage (as policies.coverage.with_coverage), `last_good_backup` (the
    newest complete backup's start), `last_attempt_status`, `last_attempt_time` and
    `last_attempt_error` (the newest backup job that succeeded or failed: cancelled and skipped
    ones are no attempt), `rpo_cutoff` (a good backup older than this
    is stale) and `rpo_status` (one of STATUSES). A constant number of queries (coverage's)."""
    now = now or timezone.now()
    policy_rules = rules() if policy_rules is None else policy_rules
    good = BackupPoint.objects.complete().filter(vm=models.OuterRef("pk")).order_by("-started")
    attempts = Job.objects.filter(
        vm=models.OuterRef("pk"), kind=BACKUP, status__in=[Job.Status.SUCCEEDED, Job.Status.FAILED]
    ).order_by("-finished", "-pk")
    vms = with_coverage(vms, policy_rules=policy_rules).annotate(
        last_good_backup=models.Subquery(good.values("started")[:1]),
        last_attempt_status=models.Subquery(attempts.values("status")[:1]),
        last_attempt_time=models.Subquery(attempts.values("finished")[:1]),
        last_attempt_error=models.Subquery(attempts.values("error")[:1]),
    )
    # The same rules in the same order as the coverage's CASE: the first match is the covering policy.
    cutoffs = [models.When(_term(r), then=models.Value(now - rpo_of(r.policy, now=now))) for r in policy_rules]
    if cutoffs:
        vms = vms.annotate(rpo_cutoff=models.Case(*cutoffs, default=None, output_field=models.DateTimeField()))
    else:
        vms = vms.annotate(rpo_cutoff=models.Value(None, output_field=models.DateTimeField()))
    return vms.annotate(
        rpo_status=models.Case(
            models.When(covering_policy_id__isnull=True, then=models.Value(UNCOVERED)),
            models.When(last_attempt_status=Job.Status.FAILED, then=models.Value(FAILING)),
            models.When(last_good_backup__isnull=True, then=models.Value(STALE)),
            models.When(last_good_backup__lt=models.F("rpo_cutoff"), then=models.Value(STALE)),
            default=models.Value(OK),
            output_field=models.CharField(),
        )
    )
