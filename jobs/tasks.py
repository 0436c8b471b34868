"""Scheduled work of the jobs app (django-q2 schedules call these): the reaper of abandoned jobs
and of queued jobs whose task was lost with a worker."""

import logging
import os
import signal
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from jobs.errors import IllegalTransition
from jobs.models import Job
from jobs.nodes import mark_lost_nodes
from jobs.runner import HANDLERS, dispatch, dispatch_waiting, left_on_engine
from jobs.snapshot_removals import snapshot_removal
from ovirt.connection import connect
from ovirt.errors import fault_text
from ovirt.leftovers import undo_engine_objects

log = logging.getLogger("jobs")


def undo_left_by(job: Job, *, quiet: bool = False) -> list[str]:
    """Undo on the engine what a job recorded and did not undo (its worker died, or its cleanup
    could not reach the engine); each record undone is dropped. Returns what is still left, by name
    and id. A failure is logged (unless `quiet`: a retry of one already told), never raised, so one
    unreachable engine does not stop the reaping of other jobs."""
    try:
        with connect(job.manager) as connection:
            undo_engine_objects(connection, job.engine_objects, job=job, snapshot_removal=removal_for(job))
    except Exception as e:
        if not quiet:
            job.log(
                "error",
                f"Could not reach engine {job.manager.name} to undo this job's work: {fault_text(e).rstrip('.')}. "
                "The reaper tries again at each pass.",
            )
    return left_on_engine(job)


def removal_for(job: Job):
    """The reaper's removals of a job's snapshots keep clear of the VM's backups (jobs.snapshot_removals)."""

    @contextmanager
    def removal(vm_id: str, snapshot_id: str):
        with snapshot_removal(vm_id, snapshot_id, holder=f"the reaper, for job {job.pk}") as backup:
            if backup is None:
                yield ""
            else:
                yield f"backup job {backup.pk} of the VM is running; it or the reaper's next pass removes it"

    return removal


# An undo the engine keeps refusing (a permission missing, an object locked for hours) is tried at
# each pass at first (an engine restarting answers within minutes), then less and less often: every
# pass of every such job would otherwise cost a login and a refusal a minute, forever.
UNDO_RETRY_MAX = timedelta(hours=1)
UNDO_RETRY_WARN_AFTER = 5  # attempts before the job says the reaper now tries less often


def retry_undoing_left_objects(now: datetime | None = None) -> int:
    """Undo what ended jobs still record on the engine: their cleanup could not reach it (an engine
    that was down), or a reaper pass could not. Each failed attempt doubles the wait before the next
    (from one minute up to UNDO_RETRY_MAX), recorded on the job as `undo_retry`. Returns how many
    jobs are clean now."""
    now = now or timezone.now()
    cleaned = 0
    ended = Job.objects.filter(status__in=Job.FINAL, result__has_key="engine_objects").exclude(manager=None)
    for job in ended.select_related("manager"):
        if not left_on_engine(job):
            continue
        retry = job.result.get("undo_retry") or {}
        if retry.get("next") and now < datetime.fromisoformat(retry["next"]):
            continue
        left = undo_left_by(job, quiet=True)
        job.refresh_from_db(fields=["result"])
        if not left:
            job.log("info", "Nothing this job made is left on the engine any more.")
            job.result.pop("undo_retry", None)
            Job.objects.filter(pk=job.pk).update(result=job.result)
            cleaned += 1
            continue
        attempts = retry.get("attempts", 0) + 1
        wait = min(timedelta(minutes=2 ** (attempts - 1)), UNDO_RETRY_MAX)
        job.result["undo_retry"] = {"attempts": attempts, "next": (now + wait).isoformat()}
        Job.objects.filter(pk=job.pk).update(result=job.result)
        if attempts == UNDO_RETRY_WARN_AFTER:
            job.log(
                "warning",
                f"Still on the engine after {attempts} attempts to undo it: {', '.join(left)}. The reaper now "
                f"tries less often (at most every {int(UNDO_RETRY_MAX.total_seconds() // 60)} min); check it on "
                "the engine.",
            )
    return cleaned


def stop_processes_using(path: Path, *, job: Job) -> None:
    """Stop processes of this node that a dead worker left writing under `path`: imageio's client
    runs a persistent qemu-nbd per download, which outlives a worker killed alone (OOM killer) and
    would keep the removed file's space in use."""
    prefix = str(path) + os.sep
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # qemu-nbd names its image inside a json: argument, so look for the path anywhere in one.
        if any(prefix in a.decode(errors="replace") for a in args[1:]):
            name = Path(args[0].decode(errors="replace")).name
            try:
                os.kill(int(proc.name), signal.SIGTERM)
                job.log("warning", f"Stopped {name} (pid {proc.name}), left writing {path} by the dead worker")
            except OSError:
                pass


def job_ids_in_broker(broker=None) -> set[int]:
    """Jobs whose task waits in the broker, not yet taken by any worker.

    A task a worker took is no longer there: Redis pops it, the ORM broker locks it until its
    retry time (a day, as long as the longest job), so a worker that dies holding it would leave
    its job queued that long without the reaper.
    """
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    from jobs.models import Node

    # The site's queue and those of the nodes that may still take a task (a lost node's are not
    # counted: what waits there is sent elsewhere).
    queues = [Conf.PREFIX, *(n.queue for n in Node.objects.exclude(status=Node.Status.LOST))]
    broker = broker or get_broker()
    if isinstance(broker, ORM):
        payloads = broker.get_connection().filter(key__in=queues, lock__lte=timezone.now())
        payloads = list(payloads.values_list("payload", flat=True))
    else:
        payloads = [p for queue in queues for p in broker.connection.lrange(f"django_q:{queue}:q", 0, -1)]
    ids = set()
    for payload in payloads:
        try:
            task = SignedPackage.loads(payload)
        except Exception:
            continue  # not ours to read (signed with another key)
        if task.get("func") == "jobs.runner.run_job" and task.get("args"):
            ids.add(int(task["args"][0]))
    return ids


def requeue_lost_jobs(grace_seconds: int = 60) -> int:
    """Dispatch again the queued jobs that no task will run: their task was taken by a worker that
    died before claiming them (or the web process died between the commit and the dispatch).

    A job whose task is only held back in a live worker's prefetch gets a second task too; that is
    harmless, as a job is claimed once and a task for a claimed job does nothing.
    """
    in_broker = job_ids_in_broker()
    lost = Job.objects.undispatched(grace_seconds).exclude(pk__in=in_broker)
    lost = lost.exclude(pk__in=Job.objects.waiting()).order_by("created")
    requeued = 0
    for job in lost:
        job.log("info", "Handed to the workers again: no worker had started it (one may have stopped after taking it)")
        dispatch(job.pk, kind=job.kind)
        requeued += 1
    return requeued


def give_up_on(job: Job, error: str) -> bool:
    """Fail a running job whose worker or node is gone, and undo what it left: on its node (files, a
    process still writing, LVs it activated), then on the engine, from what it recorded. What it
    left on a node that is neither this one nor lost (a hung worker, whose processes may still be
    writing there) is left to that node, which cleans it when it next joins. False if the job had
    ended meanwhile."""
    try:
        job.fail(error)
    except IllegalTransition:
        return False
    handler = HANDLERS.get(job.kind)
    if handler is not None and handler.on_abandoned is not None:
        # Each kind's handler decides what another node may undo (jobs.nodes.wrote_here_or_lost).
        clean_up_after(job, handler)
        if job.node not in ("", settings.NODE_NAME):
            # Its own node undoes, when it next joins, what only it can reach (its processes, files it
            # was writing while not lost).
            job.refresh_from_db(fields=["result"])
            job.result["left_on_node"] = job.node
            Job.objects.filter(pk=job.pk).update(result=job.result)
    recorded = left_on_engine(job)
    if not recorded:
        job.add_to_error("It had left nothing on the engine that needs undoing.")
    elif job.manager is None:
        job.add_to_error(f"It had left on the engine: {', '.join(recorded)}; its manager is gone.")
    else:
        left = undo_left_by(job)
        undone = [r for r in recorded if r not in left]
        if undone:
            job.add_to_error(f"Undone on the engine: {', '.join(undone)}.")
        if left:
            job.add_to_error(f"Still on the engine: {', '.join(left)}; the reaper tries again when the engine answers.")
    return True


def clean_up_after(job: Job, handler) -> None:
    """This node's leftovers of a dead job first (a process still writing a file; a point that was
    completed, whose kept snapshot is then no leftover), then the engine's (by the caller)."""
    try:
        handler.on_abandoned(job)
    except Exception as e:
        # One job's leftovers (a destination unmounted, say) must not stop this pass: its engine
        # objects, the other dead jobs and the queue still need the reaper.
        log.exception("undoing what job %s left on this node failed", job.pk)
        job.add_to_error(f"Undoing what it left on this node failed: {e}")


def clean_up_left_here() -> int:
    """What jobs of this node that others gave up on left here (run when the node joins, before it
    takes work). Returns how many jobs were cleaned."""
    cleaned = 0
    here = settings.NODE_NAME
    for job in Job.objects.filter(status__in=Job.FINAL, node=here, result__left_on_node=here):
        handler = HANDLERS.get(job.kind)
        if handler is not None and handler.on_abandoned is not None:
            clean_up_after(job, handler)
        job.refresh_from_db(fields=["result"])
        job.result.pop("left_on_node", None)
        Job.objects.filter(pk=job.pk).update(result=job.result)
        job.log("info", f"Node {settings.NODE_NAME} undid what this job had left on it.")
        cleaned += 1
    return cleaned


def reap_abandoned_jobs(timeout_seconds: int | None = None) -> int:
    """Fail running jobs whose worker died, so their VM can be backed up again.

    What the job made on the engine (snapshots, image transfers, disks, a VM, a VM renamed aside)
    is undone here, from the objects it recorded as it went, and its error says which; the next
    backup of the same VM also closes what it finds of ours, in case a record was lost. What it left
    on this node (a half-written backup directory) is undone by its kind's handler. Ended jobs whose
    cleanup could not undo everything (an engine that was down) are retried here too.
    """
    timeout = settings.JOB_HEARTBEAT_TIMEOUT if timeout_seconds is None else timeout_seconds
    reaped = 0
    for node, jobs in mark_lost_nodes().items():
        for job in jobs:
            reaped += give_up_on(job, f"The node {node.name} running this job was lost ({node.status_reason}).")
    for job in Job.objects.abandoned(timeout):
        silent = timezone.now() - job.heartbeat
        reaped += give_up_on(
            job,
            f"The worker running this job on {job.node or 'an unknown node'} stopped responding "
            f"({int(silent.total_seconds())}s without a heartbeat).",
        )
    retry_undoing_left_objects()
    requeue_lost_jobs(grace_seconds=min(60, timeout))
    dispatch_waiting()  # a reaped job held a slot that a job put aside may take now
    return reaped
