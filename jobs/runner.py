"""How a Job runs: created by a request, enqueued on commit, claimed and run by a worker.

A task carries only the job id. The worker claims the job with a conditional update (so a
job runs once even if its task is delivered twice), looks up the handler for the job's kind,
and records the outcome. Handlers raise JobError for failures a person should read, and call
`job.check_cancel()` between steps.
"""

import logging
import traceback
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from jobs.models import IllegalTransition, Job

log = logging.getLogger("jobs")

HANDLERS: dict[str, Callable[..., dict | None]] = {}


class JobError(Exception):
    """A failure whose message is meant for the operator as it is."""


class JobCancelled(Exception):
    pass


def handler(kind: str):
    """Register `fn(*, job) -> result dict` as what runs jobs of this kind."""

    def register(fn):
        HANDLERS[kind] = fn
        return fn

    return register


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
    _load_handlers()
    job = Job.objects.get(pk=job_id)
    if not _wait_for_slot(job):
        return Job.objects.get(pk=job_id).status
    try:
        job.start()
    except IllegalTransition:
        log.info("job %s was already claimed or cancelled", job_id)
        return Job.objects.get(pk=job_id).status
    fn = HANDLERS.get(job.kind)
    try:
        if fn is None:
            raise JobError(f"no handler for {job.kind} jobs on this node")
        job.check_cancel()
        result = fn(job=job)
        job.succeed(result=result or {})
    except JobCancelled:
        job.mark_cancelled()
    except JobError as e:
        job.fail(str(e))
    except Exception as e:
        log.exception("job %s failed", job_id)
        job.log("debug", traceback.format_exc())
        job.fail(f"Unexpected error: {type(e).__name__}: {e}")
    return job.status


DATA_KINDS = (Job.Kind.BACKUP, Job.Kind.RESTORE)


def busy_limit(job: Job) -> str:
    """Which concurrency limit this job would exceed now ("" when it may start)."""
    if job.kind not in DATA_KINDS or job.vm is None:
        return ""
    running = Job.objects.running().filter(kind__in=DATA_KINDS).exclude(pk=job.pk)
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
    import time

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


def _load_handlers() -> None:
    # Each app registers its handlers in its own module; import them once here.
    import inventory.sync  # noqa: F401
    import repository.restore  # noqa: F401
    import strategies.backup
    import strategies.image_transfer  # noqa: F401
