"""How a Job runs: created by a request, enqueued on commit, claimed and run by a worker.

A task carries only the job id. The worker claims the job with a conditional update (so a
job runs once even if its task is delivered twice), looks up the handler for the job's kind,
and records the outcome. Handlers raise JobError for failures a person should read, and call
`job.check_cancel()` between steps.
"""

import logging
import traceback

import ovirtsdk4 as sdk
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Cancelled, OperatorError
from jobs import shutdown
from jobs.errors import IllegalTransition, SlotTaken
from jobs.kinds import HANDLERS, Handler, data_kinds, register_handler, register_slots, slots_for
from jobs.models import Job, JobSlot
from jobs.placement import Nodes, placement_of, why_no_node
from ovirt.errors import engine_trouble, fault_text
from ovirt.leftovers import describe_engine_object

__all__ = ["HANDLERS", "Handler", "data_kinds", "register_handler", "register_slots", "run_job"]

log = logging.getLogger("jobs")


def enqueue(job: Job) -> Job:
    """Queue the job's task once the surrounding transaction commits."""
    transaction.on_commit(lambda: dispatch(job.pk, kind=job.kind))
    return job


def dispatch(job_id: int, *, kind: str, chosen_node: bool = False) -> None:
    """Send the job's task to the queue of a node its placement admits, noting when and where (the
    reaper's clues to a lost task); with no such node online, the job waits, saying why, and is
    sent when one joins (dispatch_waiting)."""
    if settings.Q_CLUSTER.get("sync"):
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(dispatched=timezone.now())
        if not shutdown.stop_requested():
            run_job(job_id)  # tests: the job runs here and now
        return
    job = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).select_related("vm__cluster", "manager").first()
    if job is not None:  # else claimed, cancelled or ended meanwhile
        _send(job, Nodes.now(), chosen_node=chosen_node)


def _send(job: Job, nodes: Nodes, *, chosen_node: bool = False) -> None:
    placement = placement_of(job)
    if not chosen_node and not nodes.must_choose(placement):
        # Any node may run it: the site's queue, which every node takes from.
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(dispatched=timezone.now(), sent_to="")
        _hand_over(job.pk, kind=job.kind)
        return
    node = nodes.choose(placement)
    if node is None:
        _put_aside(job, why_no_node(job), said=job.waiting_for)
        return
    Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        dispatched=timezone.now(), sent_to=node.name, waiting_for=""
    )
    _hand_over(job.pk, kind=job.kind, queue=node.queue)


def _hand_over(job_id: int, *, kind: str, queue: str | None = None) -> None:
    """The task to the broker. A broker that does not answer keeps the job queued with its hand-over
    time, for the reaper to hand it over again once the broker answers; the request that asked for
    it goes on (its audit record, its answer saying the broker is down)."""
    from django_q.tasks import async_task

    from jobs import broker

    options = {"cluster": queue} if queue else {}
    try:
        async_task("jobs.runner.run_job", job_id, task_name=f"{kind}-{job_id}", **options)
    except Exception as e:
        if not broker.is_broker_failure(e):
            raise
        broker.note_dispatch_failed(job_id, e)


def dispatch_many(jobs: list[tuple[int, str]]) -> None:
    """Hand several jobs' tasks to the broker (job id, kind), in one transaction: one commit for all
    rather than two per job (a policy run queues hundreds). Tests run each job here, outside it."""
    if settings.Q_CLUSTER.get("sync"):
        for job_id, kind in jobs:
            dispatch(job_id, kind=kind)
        return
    ids = [job_id for job_id, _ in jobs]
    nodes = Nodes.now()  # once for the batch, not per job
    with transaction.atomic():
        for start in range(0, len(ids), 500):
            queued = Job.objects.filter(pk__in=ids[start : start + 500], status=Job.Status.QUEUED)
            for job in queued.select_related("vm__cluster", "manager").order_by("pk"):
                _send(job, nodes)


def dispatch_waiting(*, most: int | None = None, look_at: int = 100) -> int:
    """Hand to the workers the jobs put aside that may start now.

    The candidates are the oldest waiting job of each group (Job.group: a policy run), so that one
    run's thousands of waiting backups never hide another's, and the oldest `look_at` of no group; at most
    `most` of them (a node's worker count) are handed out per call, each job's end calling again.
    """
    from django.db.models import Min

    most = settings.Q_CLUSTER["workers"] if most is None else most
    waiting = Job.objects.waiting().select_related("vm", "manager")
    firsts = waiting.exclude(group=None).order_by().values("group").annotate(first=Min("pk")).values("first")
    candidates = sorted(
        [*waiting.filter(pk__in=firsts), *waiting.filter(group=None).order_by("created", "pk")[:look_at]],
        key=lambda job: (job.created, job.pk),
    )
    dispatched = 0
    for job in candidates:
        if dispatched >= most:
            break
        if not busy_limit(job):
            dispatch(job.pk, kind=job.kind)
            dispatched += 1
    return dispatched


def run_job(job_id: int) -> str:
    """The worker's entry point. Returns the final status (or "queued" when it did not start)."""
    # Busy from the first line (also set by django-q2's pre_execute in a worker): a stop signal
    # only sets a flag, so it never lands between the claim and the job's cleanup stack.
    with shutdown.busy():
        return _claim_and_run(job_id)


def _claim_and_run(job_id: int) -> str:
    job = Job.objects.get(pk=job_id)
    if job.status != Job.Status.QUEUED:
        return job.status  # a second task for a job already claimed (the reaper's, or a redelivery)
    if skip_if_late(job, now=timezone.now()):
        return job.status
    if shutdown.stop_requested():
        dispatch(job_id, kind=job.kind)  # for the next worker; this one is on its way out
        return job.status
    if not runs_here(job):
        # Taken from the site's queue by a node its placement does not admit (the nodes changed since
        # it was sent): sent again, to one that does, or it waits.
        # To a chosen node's queue: back in the site's, a draining node could take it again.
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(dispatched=None)
        dispatch(job_id, kind=job.kind, chosen_node=True)
        return job.status
    slots = slots_for(job)
    try:
        job.start(slots=slots)  # counts the slots' holders and claims the job in one transaction
    except SlotTaken as full:
        _put_aside(job, str(full), said=job.waiting_for)
        if not JobSlot.objects.full(slots):  # the job holding the slot ended meanwhile, before it saw this one
            dispatch(job_id, kind=job.kind)
        return job.status
    except IllegalTransition:
        log.info("job %s was already claimed or cancelled", job_id)
        return Job.objects.get(pk=job_id).status
    handler = HANDLERS.get(job.kind)
    _run(job, handler)
    if handler is not None and handler.moves_data:
        dispatch_waiting()
    return job.status


def runs_here(job: Job) -> bool:
    """Whether this node may run the job: its placement admits this node. A process that is no node
    (a test, a command run by hand) runs what it is given."""
    from jobs.models import Node

    node = Node.objects.filter(name=settings.NODE_NAME).first()
    return node is None or (node.status == Node.Status.ONLINE and placement_of(job).admits(node))


def skip_if_late(job: Job, *, now) -> bool:
    """Skip a queued job whose deadline passed (True), rather than start it late."""
    if job.not_after is None or now <= job.not_after:
        return False
    try:
        job.skip(job.skip_reason or f"not started by {timezone.localtime(job.not_after):%Y-%m-%d %H:%M %Z}.")
    except IllegalTransition:
        job.refresh_from_db()
        return job.status != Job.Status.QUEUED
    return True


def skip_late_jobs(*, now) -> int:
    """Skip every queued job past its deadline (those put aside for a slot have no task to do it)."""
    skipped = 0
    for job in Job.objects.past_deadline(now):
        skipped += skip_if_late(job, now=now)
    return skipped


def _run(job: Job, handler: Handler | None) -> None:
    try:
        if handler is None:
            raise OperatorError(f"No handler for {job.kind} jobs on this node.")
        job.check_cancel()
        result = handler.run(job=job)
        job.succeed(result=result or {})
    except BaseException as e:
        if shutdown.stop_requested() and (getattr(e, "__notes__", None) or left_on_engine(job)):
            # Its cleanup could not undo everything: a new attempt could collide with what is left,
            # so the job fails naming it, as any failed job does (the reaper retries the undoing).
            job.fail(_with_notes(f"The worker on {job.node} was stopped while running this job.", e, job))
        elif shutdown.stop_requested():
            # Whatever the handler saw last (a cancel, or a helper process stopped by the same
            # signal), the cause is the stop, and its cleanup ran on the way out.
            try:
                job.requeue(
                    f"The worker on {job.node} was stopped while running this job; what it had made "
                    "is undone, and the job is queued again to start from the beginning."
                )
            except IllegalTransition:
                pass  # the reaper had given up on it meanwhile
            else:
                dispatch(job.pk, kind=job.kind)
        elif isinstance(e, Cancelled):
            job.mark_cancelled()
            _tellleft_on_engine(job)
        elif isinstance(e, OperatorError):
            job.fail(_with_notes(str(e), e, job))
        elif isinstance(e, sdk.Error):
            # An engine call no step put in words: the error in words all the same, never pycurl's
            # tuples; the traceback says which call, for admins.
            log.exception("job %s failed", job.pk)
            job.log("debug", traceback.format_exc())
            engine = f"The engine of {job.manager.name}" if job.manager else "The engine"
            verb = "stopped answering" if engine_trouble(e) == "gone" else "failed a request"
            job.fail(_with_notes(f"{engine} {verb}: {fault_text(e).rstrip('.')}.", e, job))
        elif isinstance(e, Exception):
            log.exception("job %s failed", job.pk)
            job.log("debug", traceback.format_exc())  # shown to admins only
            job.fail(_with_notes(f"Unexpected error: {type(e).__name__}: {e}", e, job))
        else:
            raise
    if job.engine_objects and job.status == Job.Status.SUCCEEDED:
        # The work succeeded: what is still recorded is meant to stay. A failed job keeps what its
        # cleanup could not undo, for the reaper to retry (its error and log name it).
        job.forget_engine_objects()


def left_on_engine(job: Job) -> list[str]:
    """What the job recorded on the engine (or on a host: an LV it activated) and has not undone, by
    name and id; a record of a kind no undo is registered for too, so that it is never overlooked."""
    return [describe_engine_object(o) for o in job.engine_objects]


def _put_aside(job: Job, reason: str, *, said: str) -> None:
    """A job that would exceed a concurrency limit does not hold a worker: it stays queued without
    a task, and is dispatched again when a data-moving job ends (or by the reaper)."""
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(dispatched=None, waiting_for=reason)
    if updated and reason != said:
        job.log("info", f"Waiting: {reason}")


def busy_limit(job: Job) -> str:
    """Which concurrency limit this job would exceed now ("" when it may start): a hint for handing
    out waiting jobs; the claim itself counts again, under lock (Job.start)."""
    return JobSlot.objects.full(slots_for(job), besides=job.pk)


def _with_notes(message: str, error: BaseException, job: Job | None = None) -> str:
    """The error, then what its cleanup could not undo (notes added by core.cleanup), then what is
    still on the engine because of that (also a line of the job's log)."""
    parts = [message, *getattr(error, "__notes__", [])]
    if job is not None and (said := _tellleft_on_engine(job)):
        parts.append(said)
    return " ".join(parts)


def _tellleft_on_engine(job: Job) -> str:
    """Log (and return) what the job's cleanup could not undo on the engine, by name and id."""
    left = left_on_engine(job)
    if not left:
        return ""
    said = (
        f"Left on the engine: {', '.join(left)}. The reaper removes it when the engine answers again."
        if len(left) == 1
        else f"Left on the engine: {', '.join(left)}. The reaper removes them when the engine answers again."
    )
    job.log("error", said)
    return said
