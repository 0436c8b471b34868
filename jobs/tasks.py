"""Scheduled work of the jobs app (django-q2 schedules call these)."""

import os
import signal
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from jobs.models import IllegalTransition, Job


def undo_left_by(job: Job) -> None:
    """Undo on the engine what an abandoned job recorded; a failure is logged, never raised, so one
    unreachable engine does not stop the reaping of other jobs."""
    from inventory.engine import connect
    from strategies.engine import undo_engine_objects

    try:
        with connect(job.manager) as connection:
            if not undo_engine_objects(connection, job.engine_objects, job=job):
                job.forget_engine_objects()
    except Exception as e:
        job.log("error", f"Could not reach engine {job.manager.name} to undo this job's work: {e}")


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


def reap_abandoned_jobs(timeout_seconds: int | None = None) -> int:
    """Fail running jobs whose worker died, so their VM can be backed up again.

    What a backup left on the engine (a snapshot, an open image transfer) is closed by the next
    backup of the same VM; a half-written backup directory has no manifest and is ignored and
    removed here. What a restore made (disks, a VM, a VM renamed aside) is undone here, from the
    objects the job recorded as it went.
    """
    from repository.models import BackupPoint

    timeout = settings.JOB_HEARTBEAT_TIMEOUT if timeout_seconds is None else timeout_seconds
    reaped = 0
    for job in Job.objects.abandoned(timeout):
        silent = timezone.now() - job.heartbeat
        try:
            job.fail(
                f"The worker running this job on {job.node or 'an unknown node'} stopped responding "
                f"({int(silent.total_seconds())}s without a heartbeat). "
                + (
                    "What it had made on the engine is removed now (see the job's log)."
                    if job.engine_objects
                    else "Anything it left on the engine is cleaned up by the next backup of this VM."
                )
            )
        except IllegalTransition:
            continue
        if job.engine_objects and job.manager is not None:
            undo_left_by(job)
        for point in BackupPoint.objects.filter(job=job, status=BackupPoint.Status.RUNNING):
            if job.node == settings.NODE_NAME:
                stop_processes_using(point.directory.path, job=job)
            point.directory.remove()
            BackupPoint.objects.filter(pk=point.pk).update(status=BackupPoint.Status.FAILED, finished=timezone.now())
        reaped += 1
    return reaped
