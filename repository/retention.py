"""Retention: which backup points a policy keeps, which go, and which are merged into a kept one.

`select_expired` decides over one VM's points on one destination and touches nothing: the same
plan is printed by `--dry-run`, shown on the policy page and carried out by the retention job.
It is chain-aware: a point that a kept point is read through is never deleted. When the full at
the root of a chain expires and the oldest kept point of that chain is an incremental, the
expired points under it are merged into it (repository.consolidate) instead of kept.
"""

import fcntl
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import Exists, OuterRef, ProtectedError
from django.utils import timezone

from jobs.errors import JobError
from jobs.models import Job
from jobs.runner import enqueue
from repository.claims import EXCLUSIVE, PointBusy, claim_points
from repository.models import BackupDestination, BackupPoint
from repository.places import in_place, place_words, places
from repository.storage import DestinationRefused, RepositoryError

# The kind of job this app registers (jobs.kinds): a policy's retention of its backups.
RETENTION = "retention"
KEEP, DELETE, MERGE = "keep", "delete", "merge"


class PointInfo(NamedTuple):
    """What the selection needs of a point (one row of the query of plan_policy)."""

    pk: int
    started: datetime
    parent_id: int | None
    status: str
    type: str = BackupPoint.Type.FULL
    governed: bool = True  # made by the policy deciding; others (by hand, another policy) are only kept


@dataclass
class Decision:
    point: PointInfo
    action: str  # keep, delete or merge
    reason: str
    into: int | None = None  # merge: the kept point that absorbs this one

    def __str__(self) -> str:
        return f"#{self.point.pk} {self.point.started:%Y-%m-%d %H:%M} {self.point.type}: {self.reason}"


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)  # newest first

    def of(self, action: str) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    @property
    def merge_targets(self) -> list[int]:
        """The kept points that become fulls, oldest chain first."""
        return list(dict.fromkeys(d.into for d in reversed(self.decisions) if d.action == MERGE))

    def as_dict(self) -> list[dict]:
        return [
            {
                "point": d.point.pk,
                "started": d.point.started.isoformat(),
                "type": d.point.type,
                "action": d.action,
                "reason": d.reason,
                "into": d.into,
            }
            for d in self.decisions
        ]


# The keep settings as the policy form labels them: what a message outside a form names them by.
KEEP_LABELS = {
    "keep_last": "Keep the last",
    "keep_days": "Keep everything younger than (days)",
    "keep_daily": "Keep daily backups of the last (days)",
    "keep_weekly": "Keep weekly backups of the last (weeks)",
    "keep_monthly": "Keep monthly backups of the last (months)",
}


def validate_keep(*, keep_last: int, keep_days: int, daily: int, weekly: int, monthly: int) -> dict[str, str]:
    """Field name -> message for keep values retention cannot run with (empty when fine). A form shows
    each beside its field's label, so the message does not name the field (keep_problems does)."""
    errors = {}
    for name, value in {
        "keep_last": keep_last,
        "keep_days": keep_days,
        "keep_daily": daily,
        "keep_weekly": weekly,
        "keep_monthly": monthly,
    }.items():
        if value is None or value < 0:
            errors[name] = f"Zero or more, not {value}."
    if not errors and keep_last < 1:
        errors["keep_last"] = "At least 1 backup; a policy that keeps none would delete every one."
    return errors


def keep_problems(errors: dict[str, str]) -> str:
    """validate_keep's messages in one sentence each, named by their labels (for a job or a command)."""
    return " ".join(f"{KEEP_LABELS[name]}: {message[0].lower()}{message[1:]}" for name, message in errors.items())


def select_expired(
    points: list[PointInfo],
    *,
    keep_last: int,
    keep_days: int = 0,
    daily: int = 0,
    weekly: int = 0,
    monthly: int = 0,
    now: datetime,
) -> Plan:
    """Decide, for each point of one VM on one destination, keep, delete or merge, and why."""
    errors = validate_keep(keep_last=keep_last, keep_days=keep_days, daily=daily, weekly=weekly, monthly=monthly)
    if errors:
        raise ValueError(keep_problems(errors))
    points = sorted(points, key=lambda p: (p.started, p.pk), reverse=True)
    by_pk = {p.pk: p for p in points}
    reasons: dict[int, list[str]] = defaultdict(list)  # kept pk -> every rule that keeps it
    good = [p for p in points if p.status == BackupPoint.Status.COMPLETE and p.governed]
    for p in points:
        if not p.governed:
            reasons[p.pk].append("made by hand or by another policy")
        elif p.status != BackupPoint.Status.COMPLETE:
            reasons[p.pk].append(f"{p.status}, never deleted silently (delete it by hand)")
    for p in good[:keep_last]:
        reasons[p.pk].append(f"one of the last {keep_last}")
    if keep_days:
        cutoff = now - timedelta(days=keep_days)
        for p in good:
            if p.started >= cutoff:
                reasons[p.pk].append(f"younger than {keep_days} days")
    tz = timezone.get_current_timezone()
    for count, label in ((daily, _day), (weekly, _week), (monthly, _month)):
        seen: list[str] = []
        for p in good:  # newest first: the newest point of each period stands for it
            period = label(p.started.astimezone(tz))
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            reasons[p.pk].append(period)
    reasons = dict(reasons)

    def ancestors(p: PointInfo) -> list[PointInfo]:
        found = []
        while p.parent_id in by_pk:
            p = by_pk[p.parent_id]
            found.append(p)
        return found

    # Walk up from each kept point to the next kept one: what it passes is read through.
    firsts: dict[int, list[PointInfo]] = defaultdict(list)  # root pk -> kept points with no kept ancestor
    needed: dict[int, set[int]] = defaultdict(set)  # expired pk -> kept points read through it
    for pk in reasons:
        p, passed = by_pk[pk], []
        while p.parent_id in by_pk and p.parent_id not in reasons:
            p = by_pk[p.parent_id]
            passed.append(p)
        for a in passed:
            needed[a.pk].add(pk)
        if passed and p.parent_id not in by_pk:
            firsts[p.pk].append(by_pk[pk])
    merged: dict[int, int] = {}
    for kept in firsts.values():
        target = kept[0]
        upward = ancestors(target)
        # One kept branch on a sound chain: fold what it reads through into it. Several branches
        # (or a damaged point) keep their expired ancestors as they are.
        if len(kept) == 1 and target.status == BackupPoint.Status.COMPLETE:
            for a in upward:
                merged[a.pk] = target.pk

    plan = Plan()
    rules = _rules(keep_last, keep_days, daily, weekly, monthly)
    for p in points:
        if p.pk in reasons:
            reason = "kept: " + ", ".join(reasons[p.pk])
            if p.pk in merged.values():
                reason += "; becomes a full (what it builds on is merged into it)"
            plan.decisions.append(Decision(p, KEEP, reason))
        elif p.pk in merged:
            plan.decisions.append(
                Decision(p, MERGE, f"merged into #{merged[p.pk]}: a kept incremental depends on it", merged[p.pk])
            )
        elif p.pk in needed:
            users = ", ".join(f"#{u}" for u in sorted(needed[p.pk]))
            plan.decisions.append(Decision(p, KEEP, f"kept: backup {users} depends on it"))
        else:
            plan.decisions.append(Decision(p, DELETE, f"deleted: {rules}"))
    return plan


def _day(t: datetime) -> str:
    return f"daily {t:%Y-%m-%d}"


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"weekly {year}-W{week:02d}"


def _month(t: datetime) -> str:
    return f"monthly {t:%Y-%m}"


def _rules(keep_last: int, keep_days: int, daily: int, weekly: int, monthly: int) -> str:
    parts = [f"not one of the last {keep_last}"]
    if keep_days:
        parts.append(f"older than {keep_days} days")
    gfs = [f"{n} {what}" for n, what in ((daily, "daily"), (weekly, "weekly"), (monthly, "monthly")) if n]
    if gfs:
        parts.append(f"not kept as {' / '.join(gfs)}")
    return ", ".join(parts)


# ----- the workflow ---------------------------------------------------------------------------


def plan_policy(*, policy, vm=None, destination=None, now: datetime | None = None) -> dict[tuple[int, int], Plan]:
    """(vm id, destination id) -> the plan for that VM's points made by this policy. The other
    points of those VMs on those destinations are in it too, kept: a chain may run across policies
    (a backup by hand, then the policy's incrementals on it), and what they build on must stay."""
    now = now or timezone.now()
    mine = BackupPoint.objects.kept().filter(policy=policy)
    if vm is not None:
        mine = mine.filter(vm=vm)
    if destination is not None:
        mine = mine.filter(destination=destination)
    points = BackupPoint.objects.kept().filter(
        Exists(mine.filter(vm=OuterRef("vm"), destination=OuterRef("destination")))
    )
    groups: dict[tuple[int, int], list[PointInfo]] = defaultdict(list)
    rows = points.values_list("vm_id", "destination_id", "policy_id", "pk", "started", "parent_id", "status", "type")
    for vm_id, destination_id, policy_id, *info in rows:
        groups[vm_id, destination_id].append(PointInfo(*info, governed=policy_id == policy.pk))
    return {
        key: select_expired(
            infos,
            keep_last=policy.keep_last,
            keep_days=policy.keep_days,
            daily=policy.keep_daily,
            weekly=policy.keep_weekly,
            monthly=policy.keep_monthly,
            now=now,
        )
        for key, infos in groups.items()
    }


def prune_policy(
    *,
    policy,
    vm=None,
    dry_run: bool,
    now: datetime | None = None,
    job: Job | None = None,
    local_to: str | None = None,
) -> dict:
    """Apply (or with dry_run only compute) the policy's retention; returns what was decided.
    With `local_to`, only on the destinations of that place (repository.places): "" the shared ones.

    Each VM's points on a destination are pruned under that VM directory's lock, planned again
    once it is held: two prunes (the one after a backup, one asked for by hand) never consolidate
    or delete the same chain at once."""
    from repository.consolidate import consolidate, finish_consolidations

    say = (lambda message: job.log("info", message)) if job else (lambda message: None)
    result = {"deleted": [], "merged": [], "kept": [], "plan": [], "errors": [], "busy": []}
    errors = result["errors"]
    here = None  # every destination: a job queued before destinations had places
    if local_to is not None:
        here = set(in_place(BackupDestination.objects.all(), local_to).values_list("pk", flat=True))
    for (vm_id, destination_id), plan in plan_policy(policy=policy, vm=vm, now=now).items():
        if here is not None and destination_id not in here:
            continue  # another place's: its own job prunes it
        if dry_run:
            result["plan"] += plan.as_dict()
            result["kept"] += [d.point.pk for d in plan.of(KEEP)]
            continue
        if job:
            job.check_cancel()
        scope = BackupPoint.objects.filter(policy=policy, vm=vm_id, destination=destination_id)
        sample = scope.select_related("vm", "destination").first()
        beat = job.beat if job else None
        try:
            if sample is not None:
                sample.destination.checked_path()
        except DestinationRefused as e:
            # Out of reach (a share not mounted): this chain waits, the policy's other destinations not.
            errors.append(str(e))
            if job:
                job.log("error", str(e))
            continue
        with chain_lock(sample, beat=beat), ExitStack() as claims:
            purge_deleted(scope)
            for what in finish_consolidations(scope.kept(), job=job):
                say(f"{what}: its unfinished merge is left until the next prune.")
            plan = claim_plan(policy=policy, vm_id=vm_id, destination_id=destination_id, now=now, job=job, on=claims)
            if plan is None:
                result["busy"].append(vm_id)
                continue
            result["plan"] += plan.as_dict()
            result["kept"] += [d.point.pk for d in plan.of(KEEP)]
            failed_targets = set()
            for pk in plan.merge_targets:
                if job:
                    job.check_cancel()  # between merges: each one is whole, or rolled back by the next prune
                target = BackupPoint.objects.select_related("vm", "destination").get(pk=pk)
                try:
                    consolidate(target, log=say, beat=beat)
                except RepositoryError as e:
                    failed_targets.add(pk)
                    errors.append(str(e))
                    if job:
                        job.log("error", str(e))
                    continue
                merged = [d.point.pk for d in plan.of(MERGE) if d.into == pk]
                say(f"Backup {', '.join(map(str, merged))} merged into backup {pk}, which is now a full")
                result["merged"] += merged
            for decision in plan.of(DELETE):
                say(f"Backup {decision.point.pk}: {decision.reason}")
            for decision in plan.decisions:
                if decision.point.status == BackupPoint.Status.DAMAGED and job:
                    job.log("warning", f"Backup {decision.point.pk} is damaged: kept, for a person to look at")
            gone = [d.point.pk for d in plan.of(DELETE)] + [
                d.point.pk for d in plan.of(MERGE) if d.into not in failed_targets
            ]
            points = BackupPoint.objects.select_related("vm", "destination").filter(pk__in=gone)
            result["deleted"] += delete_points(points=list(points), job=job)
    return result


def touched(plan: Plan) -> set[int]:
    """The points a plan rewrites (merge targets) or removes."""
    return {d.point.pk for d in plan.decisions if d.action in (DELETE, MERGE)} | set(plan.merge_targets)


def claim_plan(*, policy, vm_id: int, destination_id: int, now, job: Job | None, on: ExitStack) -> Plan | None:
    """The plan of one VM's points on one destination, with every point it merges, rewrites or deletes
    claimed EXCLUSIVE on `on`; None (said on the job) when a restore, a verify or a backup reads one of
    them: that chain is left as it is until the next prune.

    The plan is made again once the claim is held, since a backup may have completed on a point
    meanwhile; if it now touches more, the claim is taken again for that."""
    key = (vm_id, destination_id)
    for _ in range(3):
        plan = plan_policy(policy=policy, vm=vm_id, destination=destination_id, now=now).get(key, Plan())
        wanted = touched(plan)
        if not wanted:
            return plan
        claim = ExitStack()
        try:
            claim.enter_context(
                claim_points(
                    BackupPoint.objects.filter(pk__in=wanted), mode=EXCLUSIVE, doing="merged or deleted", job=job
                )
            )
        except PointBusy as e:
            if job:
                job.log("warning", f"{e.what}: its chain is left as it is until the next prune.")
            return None
        again = plan_policy(policy=policy, vm=vm_id, destination=destination_id, now=now).get(key, Plan())
        if touched(again) <= wanted:
            on.enter_context(claim)
            return again
        claim.close()
    if job:
        job.log("warning", f"The backups of VM {vm_id} kept changing while being pruned: left until the next prune.")
    return None


@contextmanager
def chain_lock(point: BackupPoint | None, *, beat=None, wait: bool = True):
    """Hold the lock of a VM's directory on a destination (where its chains live) while changing them.
    `beat` is called while waiting for it (a job's heartbeat: another prune may hold it for minutes).
    Without `wait`, gives False at once when another process holds it (True when held)."""
    if point is None:
        yield True
        return
    directory = point.destination.checked_path() / str(point.vm.engine_id)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        lock = open(directory / ".retention.lock", "a")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        # The directory went with the VM's last point (PointDir.remove) just as it was made.
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / ".retention.lock", "a")  # noqa: SIM115
    with lock:
        waited = 0
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if beat is not None and waited % 20 == 0:  # every 10 s
                    beat()
                waited += 1
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def delete_points(*, points: list[BackupPoint], job: Job | None = None) -> list[int]:
    """Delete these points, newest first so no moment has a kept point over a removed one: each row
    is marked deleted (the commit point), its files removed, then the row itself, so nothing keeps
    its VM, manager or destination from being removed. A row a failed attempt still names as its
    parent stays, marked deleted; `purge_deleted` finishes what a killed process left."""
    deleted = []
    bases = []
    for point in sorted(points, key=lambda p: p.started, reverse=True):
        marked = BackupPoint.objects.kept().filter(pk=point.pk).update(status=BackupPoint.Status.DELETED)
        if not marked:
            continue
        point.status = BackupPoint.Status.DELETED
        deleted.append(point.pk)
        if point.base_id:
            bases.append((point.pk, point.vm, point.base_kind, point.base_id))
        _purge(point)
    remove_unused_bases(bases, job=job)
    return deleted


def purge_deleted(points) -> None:
    """Remove the files and rows of points marked deleted that a killed process left."""
    bases = []
    for point in points.filter(status=BackupPoint.Status.DELETED).select_related("vm", "destination"):
        if point.base_id:
            bases.append((point.pk, point.vm, point.base_kind, point.base_id))
        _purge(point)
    remove_unused_bases(bases)


def _purge(point: BackupPoint) -> None:
    point.directory.remove()
    try:
        with transaction.atomic():
            # A failed attempt on it never was a backup: it forgets its parent rather than keep this row.
            BackupPoint.objects.filter(parent=point.pk, status=BackupPoint.Status.FAILED).update(parent=None)
            BackupPoint.objects.filter(pk=point.pk).delete()
    except ProtectedError:
        pass  # a running backup builds on it (refused before, but raced): the row stays, marked deleted


def remove_unused_bases(bases: list[tuple[int, object, str, str]], *, job: Job | None = None) -> list[str]:
    """Remove on the engine the snapshots deleted points kept, (point id, vm, kind, id) each, when
    no kept point uses them any more."""
    from jobs.snapshot_removals import snapshot_removal
    from ovirt.connection import connect
    from ovirt.snapshots import remove_snapshot

    removed = []
    holder = f"{job.kind_label.lower()} job {job.pk}" if job else "a deletion"
    with ExitStack() as stack:
        connections = {}  # one login per engine, not one per snapshot
        for pk, vm, kind, base_id in bases:
            in_use = BackupPoint.objects.kept().filter(vm=vm, base_id=base_id).exists()
            if kind != BackupPoint.BaseKind.SNAPSHOT or in_use:
                continue
            try:
                if vm.manager_id not in connections:
                    connections[vm.manager_id] = stack.enter_context(connect(vm.manager))
                # Never while a backup of the VM runs: the engine's merge would change the volumes it
                # reads (see jobs.snapshot_removals). The snapshot is ours and no kept point records
                # it, so the VM's next backup removes it before it reads anything.
                with snapshot_removal(str(vm.engine_id), base_id, holder=holder) as backup:
                    if backup is not None:
                        if job:
                            job.log(
                                "info",
                                f"The snapshot {base_id} kept by backup {pk} is left to the next backup of VM "
                                f"{vm.name}: backup job {backup.pk} of it is running.",
                            )
                        continue
                    remove_snapshot(connections[vm.manager_id], str(vm.engine_id), base_id, job=job, wait=False)
            except Exception as e:  # the point is gone either way; the VM's next backup removes what is ours
                if job:
                    job.log("warning", f"The snapshot {base_id} kept by backup {pk} was not removed: {e}")
                continue
            removed.append(base_id)
            if job:
                job.log("info", f"Removed the snapshot {base_id} that backup {pk} kept on the engine")
    return removed


def dependants(point: BackupPoint) -> list[BackupPoint]:
    """The kept points read through this one (its children, theirs, ...), oldest first."""
    found, frontier = [], [point.pk]
    while frontier:
        children = list(BackupPoint.objects.kept().filter(parent__in=frontier).order_by("started"))
        found += children
        frontier = [c.pk for c in children]
    return found


def delete_backup(
    *, point: BackupPoint, with_dependants: bool, job: Job | None = None, waiting: Callable[[], None] | None = None
) -> list[int]:
    """Delete one point, and with_dependants the points read through it. Raises ValueError with a
    message for people when it may not be deleted (PointBusy when someone reads it now). `waiting`
    is called every 10 s while another deletion or a prune holds the chain's lock.

    What is checked before waiting for the chain's lock is checked again once the points are claimed
    (repository.claims): meanwhile a backup may have built on the point, or a restore started reading it."""
    _check_deletable(point, dependants(point), with_dependants=with_dependants)
    with chain_lock(point, beat=waiting):
        for _ in range(3):
            others = dependants(point)
            _check_deletable(point, others, with_dependants=with_dependants)
            with claim_points([point, *others], mode=EXCLUSIVE, doing="deleted", job=job):
                if [o.pk for o in dependants(point)] != [o.pk for o in others]:
                    continue  # a backup built on it completed before the claim: decide again
                point.refresh_from_db()
                _check_deletable(point, others, with_dependants=with_dependants)
                return delete_points(points=[point, *others], job=job)
    raise ValueError(f"Backup {point.pk} kept gaining backups built on it while it was being deleted: try again.")


def _check_deletable(point: BackupPoint, others: list[BackupPoint], *, with_dependants: bool) -> None:
    if point.status not in (BackupPoint.Status.COMPLETE, BackupPoint.Status.DAMAGED):
        raise ValueError(f"Backup {point.pk} is {point.status}: only complete or damaged backups can be deleted.")
    if others and not with_dependants:
        raise Dependants(point, others)
    building = BackupPoint.objects.filter(status=BackupPoint.Status.RUNNING, parent__in=[point, *others]).first()
    if building is not None:
        raise ValueError(
            f"A backup building on backup {building.parent_id} is running (job {building.job_id}): "
            "wait for it to end, then delete."
        )


class Dependants(ValueError):
    def __init__(self, point: BackupPoint, others: list[BackupPoint]):
        self.point, self.others = point, others
        super().__init__(
            f"Backup {point.pk} has {len(others)} backup(s) built on it ({', '.join(str(o.pk) for o in others)}): "
            "delete them too (with_dependants) or keep it."
        )


def request_prune(*, policy, origin: str, vm=None, owner=None, group=None) -> Job:
    """Queue a retention job of a policy (of one VM of it, after its backup): one per place its
    backups are (repository.places), each run where it can reach them, in the `group` of the jobs asked
    for with it (Job.group: a policy run ends when its prunes have, so that its verify never reads a
    chain mid-merge); the first is returned, its log naming the others."""
    errors = validate_keep(
        keep_last=policy.keep_last,
        keep_days=policy.keep_days,
        daily=policy.keep_daily,
        weekly=policy.keep_weekly,
        monthly=policy.keep_monthly,
    )
    if errors:
        raise ValueError(keep_problems(errors))
    name = f"{policy.name}: {vm.name}" if vm is not None else policy.name
    kept = BackupPoint.objects.kept().filter(policy=policy)
    where = places(kept.filter(vm=vm) if vm is not None else kept) or [""]
    jobs = []
    for place in where:
        job = Job.objects.create(
            kind=RETENTION,
            started_by=policy,
            vm=vm,
            owner=owner,
            origin=origin,
            group=group,
            name=f"{name} {place_words(place)}" if len(where) > 1 else name,
            params={"vm": vm.pk if vm else None, "local_to": place},
        )
        jobs.append(enqueue(job))
    for other in jobs[1:]:
        jobs[0].log("info", f"The backups {place_words(other.params['local_to'])} are pruned there, by job {other.pk}.")
    return jobs[0]


def abandon_prune(job: Job) -> None:
    """A retention job whose worker died: finish or roll back its half-done merge and deletes now,
    rather than at the policy's next prune."""
    from repository.consolidate import finish_consolidations

    policy = job.started_by
    if policy is None:
        return
    # What this node can reach: another node's own directory is finished at its next prune there.
    scope = BackupPoint.objects.filter(policy=policy, destination__in=BackupDestination.objects.reachable_here())
    if job.params.get("vm"):
        scope = scope.filter(vm=job.params["vm"])
    for vm_id, destination_id in set(scope.values_list("vm", "destination")):
        group = scope.filter(vm=vm_id, destination=destination_id)
        with chain_lock(group.select_related("vm", "destination").first()):
            purge_deleted(group)
            for what in finish_consolidations(group.kept()):
                job.log("warning", f"{what}: its unfinished merge is left until the next prune.")


def run_prune(*, job: Job) -> dict:
    policy = job.started_by  # a retention job is started by its policy (request_prune)
    if policy is None:
        raise JobError("The policy of this retention job was removed.")
    vm = job.vm if job.params.get("vm") else None
    if job.params.get("vm") and vm is None:
        raise JobError("The VM of this retention job was removed from the inventory.")
    result = prune_policy(policy=policy, vm=vm, dry_run=False, job=job, local_to=job.params.get("local_to"))
    if result["errors"]:
        raise JobError(
            f"{len(result['errors'])} chain(s) could not be consolidated and are kept as they are "
            f"({result['errors'][0]}); {len(result['deleted'])} backup(s) deleted. Verify them."
        )
    job.log(
        "info",
        f"{len(result['deleted'])} backup(s) deleted, {len(result['merged'])} merged, {len(result['kept'])} kept",
    )
    return {k: result[k] for k in ("deleted", "merged", "kept")}
