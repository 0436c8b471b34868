"""Scheduled work of the jobs app (django-q2 schedules call these)."""

from django.conf import settings
from django.utils import timezone

from jobs.models import IllegalTransition, Job


def reap_abandoned_jobs(timeout_seconds: int | None = None) -> int:
    """Fail running jobs whose worker died, so their VM can be backed up again.

    What such a job left on the engine (a snapshot, an open image transfer) is closed by the
    next backup of the same VM; a half-written backup directory has no manifest and is ignored
    and removed here.
    """
    from repository.models import BackupPoint

    timeout = settings.JOB_HEARTBEAT_TIMEOUT if timeout_seconds is None else timeout_seconds
    reaped = 0
    for job in Job.objects.abandoned(timeout):
        silent = timezone.now() - job.heartbeat
        try:
            job.fail(
                f"The worker running this job on {job.node or 'an unknown node'} stopped responding "
                f"({int(silent.total_seconds())}s without a heartbeat). Anything it left on the engine is "
                "cleaned up by the next backup of this VM."
            )
        except IllegalTransition:
            continue
        for point in BackupPoint.objects.filter(job=job, status=BackupPoint.Status.RUNNING):
            point.directory.remove()
            BackupPoint.objects.filter(pk=point.pk).update(status=BackupPoint.Status.FAILED, finished=timezone.now())
        reaped += 1
    return reaped
