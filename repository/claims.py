"""Claims on backup points: the one rule every reader and writer of a chain follows.

A reader (a restore, a verify, a backup building on its parent, a browsing session) claims the
point it reads and every point that point is read through (`chain_of`), in READ mode: readers share.
A writer that removes or rewrites points (a deletion, retention's merges and deletes) claims them
EXCLUSIVE: it holds them alone.

The claims are rows of the database every node shares (PointClaim), so they hold across worker
processes and machines writing to one destination. Taking one is two steps, each its own committed
statement: insert my rows, then look for a live conflicting row of someone else; on a conflict my
rows go and the claim is refused. Of two holders that race, the one that looks last sees the
other's rows, so two conflicting claims are never both granted (both may be refused; a reader that
waits tries again). A writer re-checks what it decided on (dependants, statuses) once its claim
is granted: what changed before is then seen, and nothing changes after.

Nothing a killed process held lasts: a claim of a job lives while the job runs and beats its
heartbeat (the reaper's JOB_HEARTBEAT_TIMEOUT); one without a job (a deletion asked from a page, the
API or the command line) while its process lives on its node, and at most CLAIM_TTL.

Claims are taken outside any transaction of the caller's (a job's steps, a request without
ATOMIC_REQUESTS): an uncommitted row is a claim nobody else sees.
"""

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import OperatorError
from core.holders import holder_alive
from jobs.models import Job
from repository.models import BackupPoint, PointClaim

READ, EXCLUSIVE = PointClaim.Mode.READ, PointClaim.Mode.EXCLUSIVE
CLAIM_TTL = timedelta(minutes=15)  # the most a claim without a job lasts (a deletion takes seconds)
KEPT = (BackupPoint.Status.COMPLETE, BackupPoint.Status.DAMAGED)


class PointBusy(OperatorError, ValueError):
    """A claim was refused. `what` says why in words ("Backup 19 is being read by restore job 42");
    the message adds what to do. A ValueError too: a refused deletion is told as the other refusals."""

    def __init__(self, what: str, advice: str = "wait for it to end", *, gone: bool = False):
        self.what, self.gone = what, gone
        super().__init__(f"{what}: {advice}." if advice else f"{what}.")


def chain_of(point: BackupPoint) -> list[BackupPoint]:
    """The point and every point it is read through (its parent, theirs, ...), newest first."""
    chain = [point]
    while chain[-1].parent_id is not None:
        parent = BackupPoint.objects.filter(pk=chain[-1].parent_id).first()
        if parent is None:
            break
        chain.append(parent)
    return chain


def live_claims():
    """Claims whose holder is alive by the database's account (see `_alive` for the process check)."""
    now = timezone.now()
    fresh = now - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT)
    return PointClaim.objects.filter(
        Q(job__status=Job.Status.RUNNING, job__heartbeat__gte=fresh) | Q(job=None, expires__gt=now)
    )


def _alive(claim: PointClaim) -> bool:
    """A claim of a job lives while the job does (live_claims); one without, while its process does."""
    return claim.job_id is not None or holder_alive(node=claim.node, pid=claim.pid)


def holder_of(job: Job | None) -> str:
    if job is not None:
        return f"{job.kind_label.lower()} job {job.pk}"
    return f"a request on {settings.NODE_NAME} (process {os.getpid()})"


@contextmanager
def claim_points(
    points: Iterable[BackupPoint],
    *,
    mode: str,
    doing: str,
    job: Job | None = None,
    wait: bool = False,
) -> Iterator[None]:
    """Hold these points in `mode` for the duration; `doing` says what for, as in "being read".

    Raises PointBusy when another live holder's claim conflicts, or a point is no longer kept (deleted,
    failed; for READ, the first point, the one read). With `wait`, a claim in conflict is tried again
    every second (the job beats and may be cancelled meanwhile) for as long as the points stay kept."""
    pks = list(dict.fromkeys(p.pk for p in points))
    token = uuid.uuid4()
    holder = holder_of(job)
    said = ""
    while True:
        now = timezone.now()
        problem = _take(
            pks,
            token=token,
            mode=mode,
            doing=doing,
            holder=holder,
            job=job,
            pid=os.getpid(),
            expires=None if job is not None else now + CLAIM_TTL,
        )
        if problem is None:
            break
        if not wait or problem.gone:
            raise problem
        if job is not None:
            if problem.what != said:
                job.log("info", f"Waiting: {problem.what}")
                said = problem.what
            job.check_cancel()
        time.sleep(1)
    try:
        yield
    finally:
        PointClaim.objects.filter(token=token).delete()


def hold_points(points: Iterable[BackupPoint], *, doing: str, holder: str, pid: int, until) -> uuid.UUID:
    """A READ claim that outlives the call, for a reader that is no job and lives longer than a
    request (a browsing session): held by process `pid` of this node until `until`, which the
    holder moves on while it is used (extend_hold) and ends with release_hold. Raises PointBusy as
    claim_points does; returns the claim's token."""
    token = uuid.uuid4()
    pks = list(dict.fromkeys(p.pk for p in points))
    problem = _take(pks, token=token, mode=READ, doing=doing, holder=holder, job=None, pid=pid, expires=until)
    if problem is not None:
        raise problem
    return token


def extend_hold(token: uuid.UUID, *, until, pid: int | None = None) -> int:
    """Move the hold's end on; returns how many of its rows were still there (0: it lapsed)."""
    changes = {"expires": until} | ({"pid": pid} if pid is not None else {})
    return PointClaim.objects.filter(token=token).update(**changes)


def release_hold(token: uuid.UUID | None) -> None:
    if token is not None:
        PointClaim.objects.filter(token=token).delete()


def claim_chain(point: BackupPoint, *, job: Job | None = None, wait: bool = False):
    """The READ claim every reader of a point takes: the point and every point it is read through."""
    return claim_points(chain_of(point), mode=READ, doing="read", job=job, wait=wait)


def _take(pks: list[int], *, token, mode: str, doing: str, holder: str, job, pid: int, expires) -> PointBusy | None:
    """One try at a claim: my rows inserted, then the conflicts looked for; on a conflict my rows go
    and what is in the way is returned."""
    _forget_dead(pks)
    now = timezone.now()
    rows = [
        PointClaim(
            token=token,
            point_id=pk,
            mode=mode,
            # The points a reader reads through say for which one: "read (through backup 20)".
            doing=doing if mode == EXCLUSIVE or n == 0 else f"{doing} (through backup {pks[0]})",
            holder=holder,
            job=job,
            node=settings.NODE_NAME,
            pid=pid,
            created=now,
            expires=expires,
        )
        for n, pk in enumerate(pks)
    ]
    try:
        with transaction.atomic():
            PointClaim.objects.bulk_create(rows)
    except IntegrityError:  # a point's row was removed (deleted) just now
        problem = _gone(pks) or PointBusy(f"Backup {pks[0]} was deleted", "", gone=True)
    else:
        # A reader needs the point it reads kept; the points it is read through are claimed as they
        # are, so that a broken chain is still read, and reported as broken (verify, restore).
        problem = _conflict(pks, mode=mode, token=token) or _gone(pks if mode == EXCLUSIVE else pks[:1])
    if problem is not None:
        PointClaim.objects.filter(token=token).delete()
    return problem


def _conflict(pks: list[int], *, mode: str, token) -> PointBusy | None:
    others = live_claims().filter(point__in=pks).exclude(token=token)
    if mode == READ:
        others = others.filter(mode=EXCLUSIVE)  # readers share
    for claim in others.order_by("point_id", "created"):
        if _alive(claim):
            # A job or a request ends by itself; a hold (a browsing session, an instant restore running
            # from the backup, for days perhaps) ends when its holder is ended.
            held = claim.job_id is None and claim.mode == READ
            advice = "end that first" if held else "wait for it to end"
            return PointBusy(f"Backup {claim.point_id} is being {claim.doing} by {claim.holder}", advice)
    return None


def _gone(pks: list[int]) -> PointBusy | None:
    found = dict(BackupPoint.objects.filter(pk__in=pks).values_list("pk", "status"))
    for pk in pks:
        if pk not in found:
            return PointBusy(f"Backup {pk} was deleted", "", gone=True)
        if found[pk] not in KEPT:
            return PointBusy(f"Backup {pk} is {found[pk]}", "", gone=True)
    return None


def _forget_dead(pks: list[int]) -> None:
    """Remove the claims on these points whose holder is gone (a killed process, an ended job)."""
    live = live_claims().filter(point__in=pks)
    PointClaim.objects.filter(point__in=pks).exclude(pk__in=live.values("pk")).delete()
    for claim in live:
        if not _alive(claim):
            claim.delete()
