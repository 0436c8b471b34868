"""How a Job runs: created by a request, enqueued on commit, claimed and run by a worker.

A task carries only the job id. The worker claims the job with a conditional update (so a
job runs once even if its task is delivered twice), looks up the handler for the job's kind,
and records the outcome. Handlers raise JobError for failures a person should read, and call
`job.check_cancel()` between steps.
"""

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from core.errors import Cancelled, OperatorError
from jobs.errors import IllegalTransition
from jobs.models import Job

log = logging.getLogger("jobs")


@dataclass(frozen=True)
class Handler:
    """What runs jobs of one kind, as the app owning that kind declares it in its AppConfig.ready()."""

    kind: str
    run: Callable[..., dict | None]  # run(*, job) -> result
    # Moves disk data between the engine and a destination: counts toward the concurrency limits.
    moves_data: bool = False
    # Undoes, on this node, what a job of this kind left when its worker died (files, processes);
    # what it made on the engine is undone from the job's recorded engine objects in any case.
    on_abandoned: Callable[[Job], None] | None = None


HANDLERS: dict[str, Handler] = {}


def register_handler(
    kind: str,
    run: Callable[..., dict | None],
    *,
    moves_data: bool = False,
    on_abandoned: Callable[[Job], None] | None = None,
) -> None:
    HANDLERS[kind] = Handler(kind, run, moves_data=moves_data, on_abandoned=on_abandoned)


def data_kinds() -> list[str]:
    return [h.kind for h in HANDLERS.values() if h.moves_data]


def enqueue(job: Job) -> Job:
    """Queue the job's task once the surrounding transaction commits."""
    from django_q.tasks import async_task

    def push():
        if settings.Q_CLUSTER.get("sync"):
            run_job(job.pk)
        else:
            async_task("jobs.runner.run_job", job.pk, task_name=f"{job.kind}-{job.pk}")

    transaction.on_commit(push)
    return job


def run_job(job_id: int) -> str:
    """The worker's entry point. Returns the final status."""
    job = Job.objects.get(pk=job_id)
    if not _wait_for_slot(job):
        return Job.objects.get(pk=job_id).status
    try:
        job.start()
    except IllegalTransition:
        log.info("job %s was already claimed or cancelled", job_id)
        return Job.objects.get(pk=job_id).status
    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise OperatorError(f"No handler for {job.kind} jobs on this node.")
        job.check_cancel()
        result = handler.run(job=job)
        job.succeed(result=result or {})
    except Cancelled:
        job.mark_cancelled()
    except OperatorError as e:
        job.fail(_with_notes(str(e), e))
    except Exception as e:
        log.exception("job %s failed", job_id)
        job.log("debug", traceback.format_exc())  # shown to admins only
        job.fail(_with_notes(f"Unexpected error: {type(e).__name__}: {e}", e))
    if job.engine_objects:
        # The handler ended and its cleanup stack ran: the record was for a worker that dies.
        job.forget_engine_objects()
    return job.status


def busy_limit(job: Job) -> str:
    """Which concurrency limit this job would exceed now ("" when it may start)."""
    handler = HANDLERS.get(job.kind)
    if handler is None or not handler.moves_data or job.vm is None:
        return ""
    running = Job.objects.running().filter(kind__in=data_kinds()).exclude(pk=job.pk)
    if running.filter(manager=job.manager_id).count() >= settings.MAX_JOBS_PER_MANAGER:
        return f"{settings.MAX_JOBS_PER_MANAGER} jobs already run on manager {job.manager}"
    if job.vm.host_id and running.filter(vm__host=job.vm.host_id).count() >= settings.MAX_JOBS_PER_HOST:
        return f"{settings.MAX_JOBS_PER_HOST} jobs already run on host {job.vm.host}"
    domains = set(job.vm.disks.exclude(storage_domain=None).values_list("storage_domain", flat=True))
    if domains and running.filter(vm__disks__storage_domain__in=domains).distinct().count() >= (
        settings.MAX_JOBS_PER_STORAGE_DOMAIN
    ):
        return f"{settings.MAX_JOBS_PER_STORAGE_DOMAIN} jobs already use the VM's storage domains"
    return ""


def _wait_for_slot(job: Job, poll: float = 2.0) -> bool:
    """Hold a queued job until the per-manager, host and storage domain limits let it run.

    Returns False when it was cancelled meanwhile. The per-node limit is the worker count.
    """
    said = ""
    while reason := busy_limit(job):
        if reason != said:
            job.log("info", f"Waiting: {reason}")
            said = reason
        time.sleep(poll)
        job.refresh_from_db()
        if job.status != Job.Status.QUEUED:
            return False
    return True


def _with_notes(message: str, error: BaseException) -> str:
    """The error, then what its cleanup could not undo (notes added by core.cleanup)."""
    return " ".join([message, *getattr(error, "__notes__", [])])
