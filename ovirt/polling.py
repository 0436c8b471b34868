"""Waiting on the engine's asynchronous states, and retrying what it refuses while busy."""

import time
from collections.abc import Callable

import ovirtsdk4 as sdk

from ovirt.errors import EngineError, fault_text, lasting_refusal


def wait_for(
    check: Callable[[], object],
    *,
    what: str,
    timeout: float = 600,
    job=None,
    interval: float = 0.01,
    cancellable: bool = True,
):
    """Poll `check` until it returns something truthy, keeping the job's heartbeat; a cancel request
    stops the wait unless it is not `cancellable` (a finalize or a merge already under way).

    Polls start fast and back off gently (x1.25, at most 1 s apart), so a step the engine ends
    quickly costs about a fifth more than its own time, and a long merge a request a second."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = check()
        if value:
            return value
        if job is not None:
            job.check_cancel() if cancellable else job.beat()
        if time.monotonic() > deadline:
            raise EngineError(f"Timed out after {timeout:.0f}s waiting for {what}.")
        time.sleep(delay)
        delay = min(delay * 1.25, 1.0)


def retry_conflicts(
    call: Callable[[], object],
    *,
    what: str,
    attempts: int = 6,
    job=None,
):
    """Retry a call the engine refuses with 409 (snapshot being created, disk locked) with backoff.

    The engine answers 409 for every failed validation, lasting ones too (a running VM, a guest that
    cannot freeze): those are raised at once (`lasting_refusal`)."""
    delay = 1.0
    for attempt in range(attempts):
        try:
            return call()
        except sdk.Error as e:
            if getattr(e, "code", None) != 409 or attempt == attempts - 1:
                raise
            if lasting_refusal(fault_text(e)):
                raise
            if job:
                job.log("warning", f"{what}: the engine answered busy ({fault_text(e)}); retrying in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2
