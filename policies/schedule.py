"""Policies that run by themselves: one ticker, run every minute by one django-q2 schedule, starts
the runs that are due (no schedule row per policy or VM), skips jobs that missed their backup
window, closes finished runs (verifying their new backups when the policy asks), verifies each
policy's backups weekly when it asks, and queues the restore proofs of the policies that ask for
them (proofs.py).

A run queues one backup job per VM the policy covers (as coverage.py decides), highest priority
first; a policy whose previous run still has active jobs is not run twice at once."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from core.audit import record
from core.models import AuditEvent
from inventory.models import VM
from jobs.models import Job
from jobs.runner import dispatch_many, skip_late_jobs
from policies.coverage import rules, with_coverage
from policies.models import Policy, PolicyRun, policy_of
from policies.proofs import prove_newest
from recovery.instant.workflow import PROVE
from repository.models import BackupPoint
from repository.verify import request_verify
from strategies.backup import BACKUP, backup_key, backup_params

WEEK = timedelta(days=7)
# A cron time found later than this (the workers were stopped, or the site was just installed) is
# recorded as missed, not run late: backups at an unplanned hour surprise more than a gap does.
CATCH_UP = timedelta(hours=1)


@dataclass
class TickReport:
    runs: list[PolicyRun] = field(default_factory=list)
    skipped_jobs: int = 0
    finished_runs: int = 0
    verify_jobs: list[Job] = field(default_factory=list)
    proof_jobs: list[Job] = field(default_factory=list)


def tick(*, now: datetime | None = None) -> TickReport:
    """What the schedule does every minute; `now` is injected by tests and the bench."""
    now = now or timezone.now()
    report = TickReport()
    report.skipped_jobs = skip_late_jobs(now=now)
    report.finished_runs, verify_jobs = finish_runs(now=now)
    report.verify_jobs += verify_jobs
    report.runs = start_runs(due=due_policies(now=now), now=now, origin=Job.Origin.SCHEDULE)
    report.verify_jobs += verify_weekly(now=now)
    report.proof_jobs = prove_newest(now=now).jobs
    return report


def scheduled_tick() -> dict:
    """The django-q2 schedule's entry point: a tick now, summed up for the task's stored result."""
    report = tick()
    return {
        "runs": len(report.runs),
        "skipped_jobs": report.skipped_jobs,
        "finished_runs": report.finished_runs,
        "verify_jobs": [job.pk for job in report.verify_jobs],
        "proof_jobs": [job.pk for job in report.proof_jobs],
    }


def due_policies(*, now: datetime) -> list[tuple[Policy, datetime]]:
    """Enabled policies with a cron time after their last scheduled run (or their creation) and at
    or before `now`, each with that time: after a long stop, one run for the latest time, not one
    per missed time."""
    policies = Policy.objects.filter(enabled=True).annotate(
        last_scheduled=models.Max("runs__due", filter=models.Q(runs__origin=Job.Origin.SCHEDULE))
    )
    due = []
    for policy in policies.select_related("destination", "match_cluster").order_by("priority", "name"):
        at = policy.last_due(now)
        if at > (policy.last_scheduled or policy.created):
            due.append((policy, at))
    return due


def run_policy_now(*, policy: Policy, origin: str, owner=None, now: datetime | None = None) -> PolicyRun:
    """ "Run now" (page, API, CLI). Raises ValueError, for people, when it cannot start."""
    now = now or timezone.now()
    if not policy.enabled:
        raise ValueError(f"Policy {policy.name} is disabled; enable it to run it.")
    previous = policy.runs.order_by("-due", "-pk").first()
    if previous is not None:
        active = previous.jobs.active().count()
        if active:
            raise ValueError(
                f"Run {previous.number} of policy {policy.name} still has {active} active job(s); "
                "a run is not doubled. Wait for it, or cancel its jobs."
            )
    (run,) = start_runs(due=[(policy, now)], now=now, origin=origin, owner=owner)
    return run


def start_runs(*, due: list[tuple[Policy, datetime]], now: datetime, origin: str, owner=None) -> list[PolicyRun]:
    """Start one run of each policy for its time; queries are bounded by the number of policies,
    not of VMs."""
    if not due:
        return []
    ids = [p.pk for p, _ in due]
    covered: dict[int, list[tuple[int, str, int | None]]] = {pk: [] for pk in ids}
    rows = (
        with_coverage(VM.objects.filter(missing_since=None), policy_rules=rules())
        .order_by("name", "pk")
        .values_list("pk", "name", "manager_id", "covering_policy_id")
    )
    # Filtered here: a WHERE on the annotation would make the database evaluate every rule twice.
    for pk, name, manager_id, policy_id in rows:
        if policy_id in covered:
            covered[policy_id].append((pk, name, manager_id))
    backing_up = set(Job.objects.active().filter(kind=BACKUP).values_list("vm_id", flat=True))
    # A finished run has no active job (it finishes once none is): only open runs are counted.
    open_runs = dict(PolicyRun.objects.filter(policy__in=ids, finished=None).values_list("job_group", "policy"))
    still_active: dict[int, int] = {}
    counts = Job.objects.active().filter(group__in=list(open_runs)).values("group").annotate(n=models.Count("pk"))
    for group, n in counts.values_list("group", "n"):
        still_active[open_runs[group]] = still_active.get(open_runs[group], 0) + n
    numbers = dict(
        PolicyRun.objects.filter(policy__in=ids)
        .values("policy")
        .annotate(n=models.Max("number"))
        .values_list("policy", "n")
    )
    runs, ready = [], []
    # One transaction for every run (each in a savepoint): one commit, then the tasks go out at once.
    with transaction.atomic():
        for policy, at in due:
            run = _start_run(
                policy,
                at=at,
                now=now,
                origin=origin,
                owner=owner,
                number=numbers.get(policy.pk, 0) + 1,
                vms=covered[policy.pk],
                backing_up=backing_up,
                active=still_active.get(policy.pk, 0),
                ready=ready,
            )
            if run is not None:
                runs.append(run)
                if origin == Job.Origin.SCHEDULE:  # people's requests are recorded where they make them
                    record(
                        actor=None,
                        source=AuditEvent.Source.SCHEDULE,
                        action="policy_run_not_started" if run.finished else "policy_run_started",
                        target=policy,
                        run=run.number,
                        note=run.note,
                    )
        if ready:
            transaction.on_commit(lambda: dispatch_many(ready))
    return runs


def _start_run(policy, *, at, now, origin, owner, number, vms, backing_up, active, ready) -> PolicyRun | None:
    run = PolicyRun(policy=policy, number=number, due=at, started=now, origin=origin, owner=owner)
    scheduled = origin == Job.Origin.SCHEDULE
    not_after = policy.window_end_after(at)
    if scheduled and now - at > CATCH_UP:
        run.note = (
            f"Missed: due at {timezone.localtime(at):%Y-%m-%d %H:%M}, but the scheduler only found it at "
            f"{timezone.localtime(now):%Y-%m-%d %H:%M}; a run more than {CATCH_UP.seconds // 60} minutes late "
            "is not started."
        )
    elif active:
        run.note = f"Not started: the previous run still has {active} active job(s); a run is not doubled."
    elif scheduled and policy.window_text and not_after is None:
        run.note = (
            f"Not started: due at {timezone.localtime(at):%H:%M}, outside its backup window ({policy.window_text})."
        )
    elif not vms:
        run.note = "The policy covers no VM now."
    try:
        with transaction.atomic():
            if run.note:
                run.finished = now
                run.save()
                return run
            run.save()
            ready += _queue_backups(run, vms=vms, backing_up=backing_up, not_after=not_after, now=now)
    except IntegrityError:
        return None  # another ticker ran this cron time
    return run


def _queue_backups(run: PolicyRun, *, vms, backing_up: set[int], not_after, now) -> list[tuple[int, str]]:
    """Queue the run's backup jobs; returns those to hand to the broker now (the others wait for a slot)."""
    policy = run.policy
    busy = [name for pk, name, _ in vms if pk in backing_up]
    vms = [(pk, name, manager_id) for pk, name, manager_id in vms if pk not in backing_up]
    why_full = full_reasons(policy, run=run, vm_ids=[pk for pk, _, _ in vms], now=now)
    skip_reason = ""
    if not_after is not None:
        skip_reason = (
            f"Not started by the end of policy {policy.name}'s backup window ({policy.window_text}, "
            f"{timezone.localtime(not_after):%Y-%m-%d %H:%M %Z})."
        )
    created = timezone.now()
    limit = Job._meta.get_field("name").max_length
    # What every job of the run shares; then, per VM, what differs.
    shared = Job(
        kind=BACKUP,
        started_by=policy,
        group=run.job_group,
        owner=run.owner,
        origin=run.origin,
        not_after=not_after,
        skip_reason=skip_reason,
        created=created,
    )
    turn = f"its turn in run {run.number} of policy {policy.name}"
    own = [
        {
            "vm_id": pk,
            "exclusive": backup_key(pk),
            "manager_id": manager_id,
            "name": name[:limit],
            "params": backup_params(
                strategy=policy.strategy,
                type="full" if pk in why_full else "auto",
                destination=policy.destination,
                full_reason=why_full.get(pk, ""),
                options=policy.strategy_options,
            ),
            # The order they were queued in is the order they get slots: highest priority first.
            "created": created + timedelta(microseconds=i),
            # Beyond the policy's parallel VMs, a job waits for a slot instead of holding a worker.
            "waiting_for": "" if i < policy.parallel_vms else turn,
        }
        for i, (pk, name, manager_id) in enumerate(vms)
    ]
    # A backup asked for meanwhile (Back up now) wins: the database refuses a second active one.
    insert_jobs(shared=shared, own=own)
    queued = list(run.jobs.order_by("created", "pk").values_list("pk", "waiting_for"))
    notes = []
    if busy:
        notes.append(f"{len(busy)} VM(s) already had a backup queued or running: {', '.join(busy[:10])}.")
    if len(queued) < len(own):
        notes.append(f"{len(own) - len(queued)} VM(s) got a backup from elsewhere meanwhile.")
    if notes:
        run.note = " ".join(notes)
        run.save(update_fields=["note"])
    return [(pk, BACKUP) for pk, waiting_for in queued if not waiting_for]


def insert_jobs(*, shared: Job, own: list[dict]) -> None:
    """INSERT one job per entry of `own` (the fields that differ), the other fields as in `shared`,
    skipping any the database refuses (a VM whose backup was asked for meanwhile): bulk_create's
    effect without its cost, which compiles each of the 24 values of every row and builds a model
    instance per row (over 1 s of a tick that queues 5,000 backups)."""
    from django.db import connection
    from django.db.models.constants import OnConflict

    if not own:
        return
    ops = connection.ops
    fields = [f for f in Job._meta.concrete_fields if not f.primary_key]
    template = [f.get_db_prep_save(f.pre_save(shared, add=True), connection) for f in fields]
    position = {f.attname: n for n, f in enumerate(fields)}
    params = Job._meta.get_field("params")
    prepare = {
        "vm_id": int,
        "exclusive": str,
        "manager_id": int,
        "name": str,
        "waiting_for": str,
        "params": lambda value: params.get_db_prep_save(value, connection),
        "created": ops.adapt_datetimefield_value,
    }
    rows = []
    for entry in own:
        row = list(template)
        for name, value in entry.items():
            row[position[name]] = prepare[name](value)
        rows.append(row)
    table = ops.quote_name(Job._meta.db_table)
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    placeholders = f"({', '.join(['%s'] * len(fields))})"
    insert = f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {table} ({columns}) VALUES "
    ignore = ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    with connection.cursor() as cursor:
        # One statement of one row, sent with executemany: psycopg pipelines the rows (one round
        # trip, the statement parsed once), and the many-row statements this replaced spent most
        # of a 5,000-VM tick in psycopg's parsing of their 2,400 placeholders each.
        cursor.executemany(f"{insert}{placeholders}{ignore}", rows)


def full_reasons(policy: Policy, *, run: PolicyRun, vm_ids: list[int], now: datetime) -> dict[int, str]:
    """The VMs whose backup in this run is full by the policy's rhythm, with why (one query)."""
    if not vm_ids or policy.full_every_days == 0:
        return {}  # 0: every backup is full anyway (run_backup), and says so
    if policy.full_every_runs and (run.number - 1) % policy.full_every_runs == 0:
        why = (
            f"Full backup: policy {policy.name} takes a full backup every {policy.full_every_runs} runs "
            f"(run {run.number})."
        )
        return dict.fromkeys(vm_ids, why)
    kept = BackupPoint.objects.kept().filter(vm=models.OuterRef("pk"), destination=policy.destination_id)
    full = BackupPoint.Type.FULL
    chains = (
        VM.objects.filter(pk__in=vm_ids)
        .annotate(last_full=models.Subquery(kept.filter(type=full).order_by("-started").values("started")[:1]))
        .annotate(
            length=models.Subquery(
                kept.exclude(type=full)
                .filter(started__gt=models.OuterRef("last_full"))
                .order_by()
                .values("vm")
                .annotate(n=models.Count("pk"))
                .values("n")[:1]
            )
        )
        .values_list("pk", "last_full", "length")
    )
    reasons = {}
    today = timezone.localdate(now)
    for pk, last_full, length in chains:
        if last_full is None:
            continue  # the first backup is full in any case, and says why
        # Days on the site's calendar: the last full started seconds after its own run was due, and a
        # week of a clock change is an hour short, so elapsed time would put the next full a day late.
        age = (today - timezone.localdate(last_full)).days
        if age >= policy.full_every_days:
            reasons[pk] = (
                f"Full backup: the last full backup is {age} days old; policy {policy.name} "
                f"takes one every {policy.full_every_days} days."
            )
        elif (length or 0) >= policy.max_chain_length:
            reasons[pk] = (
                f"Full backup: the chain has {length} incremental backups, the most policy {policy.name} "
                f"allows (max chain length {policy.max_chain_length})."
            )
    return reasons


def finish_runs(*, now: datetime) -> tuple[int, list[Job]]:
    """Close the runs none of whose jobs is active any more; queue a verify of their new backups
    when the policy asks for it."""
    active = Job.objects.active().filter(group=models.OuterRef("job_group"))
    ended = PolicyRun.objects.filter(finished=None).exclude(models.Exists(active)).select_related("policy")
    verify_jobs = []
    count = 0
    for run in ended:
        with transaction.atomic():
            if not PolicyRun.objects.filter(pk=run.pk, finished=None).update(finished=now):
                continue
            count += 1
            if not run.policy.verify_after_backup:
                continue
            results = run.jobs.filter(kind=BACKUP, status=Job.Status.SUCCEEDED).values_list("result", flat=True)
            points = list(BackupPoint.objects.kept().filter(pk__in=[r.get("point") for r in results]))
            if points:
                job = request_verify(origin=Job.Origin.SCHEDULE, points=points, started_by=run.policy)
                PolicyRun.objects.filter(pk=run.pk).update(verify_job=job)
                verify_jobs.append(job)
    return count, verify_jobs


def verify_weekly(*, now: datetime) -> list[Job]:
    """A verify job of every kept backup of each policy that asks for it, once a week."""
    jobs = []
    due = Policy.objects.filter(enabled=True, verify_weekly=True).filter(
        models.Q(weekly_verified=None) | models.Q(weekly_verified__lte=now - WEEK)
    )
    for policy in due:
        with transaction.atomic():
            if not Policy.objects.filter(pk=policy.pk, weekly_verified=policy.weekly_verified).update(
                weekly_verified=now
            ):
                continue  # another ticker took it
            points = list(BackupPoint.objects.kept().filter(policy=policy))
            if points:
                jobs.append(request_verify(origin=Job.Origin.SCHEDULE, points=points, started_by=policy))
    return jobs


def policy_slots(job: Job) -> list[dict]:
    """A backup a policy queued holds one of the policy's parallel VMs while it runs (jobs.kinds).
    Not a restore proof: the policy runs one at a time already (proofs.py), and one that waited for a
    backup's slot would count the wait in its time to boot."""
    if job.kind == PROVE:
        return []
    policy = policy_of(job)
    if policy is None:
        return []
    return [
        {
            "key": f"policy:{policy.pk}",
            "limit": policy.parallel_vms,
            "label": f"VMs of policy {policy} are already backed up (its parallel VMs)",
        }
    ]
