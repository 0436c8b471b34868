"""Waiting on the engine's asynchronous states, and the one policy for asking it again (busy, or failing)."""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import ovirtsdk4 as sdk

from ovirt.errors import EngineError, engine_trouble, fault_text, lasting_refusal

log = logging.getLogger("ovirt")
T = TypeVar("T")


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


# The one retry policy of the engine client: five more tries, 1 s then twice as long each time
# (about half a minute), for a busy engine (409) and for one that failed to answer (5xx). An engine
# restarting behind Apache answers 503 for about that long; one still failing after it is told.
def retry_delays() -> tuple[float, ...]:
    """The schedule (settings.ENGINE_RETRY_DELAYS, by default 1, 2, 4, 8 and 16 s)."""
    from django.conf import settings

    return tuple(settings.ENGINE_RETRY_DELAYS)


# Server errors worth asking again: the engine's own (500), and its web server's while the engine is
# down or restarting (502, 503, 504).
RETRIED_STATUSES = frozenset({500, 502, 503, 504})


def retry_engine(
    call: Callable[[], T],
    *,
    what: str,
    job=None,
    idempotent: bool = True,
    made: Callable[[], T | None] | None = None,
) -> T:
    """`call()` under the engine client's one retry policy (retry_delays()):

    - a 409 is retried: the engine refused the request and did nothing; except the lasting refusals
      (a running VM, a guest that cannot freeze: `lasting_refusal`), raised at once;
    - a server error (5xx, or the web server's error page in place of the API) is retried when
      asking again does no harm (`idempotent`: a removal, whose second try finds the object gone, a
      finalize, a cancel). A create (`idempotent=False`) may have been done before the error came
      back (a proxy's timeout): it is asked again only once `made()` says the failed call made
      nothing; what `made()` finds is adopted instead of making a second one. A create without
      `made` is not retried on a server error.

    Reads (GET) are retried on server errors by the connection itself (ovirt.connection)."""
    for attempt, delay in enumerate((*retry_delays(), None)):
        try:
            return call()
        except sdk.Error as e:
            if delay is None:
                raise
            if getattr(e, "code", None) == 409:
                if lasting_refusal(fault_text(e)):
                    raise
                said = f"the engine answered busy ({fault_text(e)})"
            elif engine_trouble(e) == "failed" and (idempotent or made is not None):
                if not idempotent:
                    try:
                        found = made()
                    except sdk.Error:
                        raise e from None  # cannot tell whether it was made: not asked twice
                    if found is not None:
                        if job:
                            said = f"the engine failed to answer ({fault_text(e)}), yet it was done"
                            job.log("warning", f"{what}: {said}")
                        return found
                said = f"the engine failed to answer ({fault_text(e)})"
            else:
                raise
            if job:
                job.log("warning", f"{what}: {said}; retrying in {delay:.0f}s")
            log.warning("%s: %s; retry %d in %.0fs", what, said, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def remove_recorded(remove: Callable[[], object], *, what: str, job=None, record: str = "", kind: str = "") -> None:
    """`remove()` of an engine object under the retry policy (a brief lock waited out); gone already
    is fine. The job's record of it (`record`, of `kind`: another record of the same id stays) goes
    only once it is gone; a removal that fails raises EngineError in words and keeps the record."""
    try:
        retry_engine(remove, what=what, job=job)
    except sdk.NotFoundError:
        pass
    except sdk.Error as e:
        raise EngineError(f"{what} failed: {fault_text(e).rstrip('.')}.") from None
    if job is not None and record:
        job.forget_engine_object(record, kind=kind)
