"""Retention: which backup points a policy keeps, which go, and which are merged into a kept one.

`select_expired` decides over one VM's points on one destination and touches nothing: the same
plan is printed by `--dry-run`, shown on the policy page and carried out by the retention job.
It is chain-aware: a point that a kept point is read through is never deleted. When the full at
the root of a chain expires and the oldest kept point of that chain is an incremental, the
expired points under it are merged into it (repository.consolidate) instead of kept.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.utils import timezone

from repository.models import BackupPoint

KEEP, DELETE, MERGE = "keep", "delete", "merge"


class PointInfo(NamedTuple):
    """What the selection needs of a point (a row of `point_infos`)."""

    pk: int
    started: datetime
    parent_id: int | None
    status: str
    type: str = BackupPoint.Type.FULL


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


def validate_keep(*, keep_last: int, keep_days: int, daily: int, weekly: int, monthly: int) -> dict[str, str]:
    """Field name -> message for keep values retention cannot run with (empty when fine)."""
    errors = {}
    for name, value in {
        "keep_last": keep_last,
        "keep_days": keep_days,
        "keep_daily": daily,
        "keep_weekly": weekly,
        "keep_monthly": monthly,
    }.items():
        if value is None or value < 0:
            errors[name] = f"{name} must be zero or more, not {value}."
    if not errors and keep_last < 1:
        errors["keep_last"] = "keep_last must be at least 1: a policy that keeps no backup would delete every one."
    return errors


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
        raise ValueError(" ".join(errors.values()))
    points = sorted(points, key=lambda p: (p.started, p.pk), reverse=True)
    by_pk = {p.pk: p for p in points}
    reasons: dict[int, list[str]] = defaultdict(list)  # kept pk -> every rule that keeps it
    good = [p for p in points if p.status == BackupPoint.Status.COMPLETE]
    for p in points:
        if p.status != BackupPoint.Status.COMPLETE:
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

