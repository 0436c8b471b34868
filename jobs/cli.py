"""Shared by the command line tools: wait for a job with a progress line on a terminal."""

import sys
import time

from django.core.management import CommandError

from core.formats import duration
from jobs.models import Job


def wait_for_job(job: Job, *, stream=None, timeout: float = 24 * 3600) -> Job:
    """Follow a job until it ends; print a progress line when `stream` is a terminal."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    deadline = time.monotonic() + timeout
    last_event = 0
    while True:
        job.refresh_from_db()
        for event in job.events.filter(pk__gt=last_event).order_by("pk"):
            last_event = event.pk
            if tty:
                stream.write("\r\033[K")
            stream.write(f"{event.time:%H:%M:%S} {event.level}: {event.message}\n")
        if job.is_final:
            break
        if tty and job.bytes_total:
            stream.write(f"\r\033[K{job.progress_text}")
            stream.flush()
        if time.monotonic() > deadline:
            raise CommandError(f"Job {job.pk} is still {job.get_status_display().lower()} after {duration(timeout)}.")
        time.sleep(0.5)
    if tty:
        stream.write("\r\033[K")
    return job


def finish(job: Job) -> None:
    if job.status != Job.Status.SUCCEEDED:
        raise CommandError(f"Job {job.pk} {job.get_status_display().lower()}: {job.error or 'no error recorded'}")
