"""Shared by the command line tools: wait for a job with a progress line on a terminal."""

import sys
import time

from django.core.management import CommandError

from core.formats import duration, iec
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
            # The pages' units (core.formats): "1.2 GiB of 8.0 GiB, 410.3 MiB/s, 2 min 10 s left".
            rate = f", {iec(job.throughput)}/s" if job.throughput else ""
            eta = f", {duration(job.eta_seconds)} left" if job.eta_seconds is not None else ""
            stream.write(
                f"\r\033[K[{job.progress_percent:5.1f}%] {iec(job.bytes_done)} of {iec(job.bytes_total)}{rate}{eta}"
            )
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
