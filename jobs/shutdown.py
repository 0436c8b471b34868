"""Stopping a worker node without losing or half-doing a job.

systemd stops a service by sending SIGTERM to every process of its group (or, with
KillMode=mixed, to the main process only, which `manage.py worker` passes on to its workers as
SIGUSR1). A django-q2 worker process that gets either signal while it runs a job asks the job to
stop at its next check, as a cancel does: the job's cleanup runs (image transfer cancelled,
snapshot removed, unfinished backup directory discarded) and the job goes back to the queue, to
start again from the beginning on the next worker. An idle worker simply exits.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The signal `manage.py worker` sends its workers on SIGTERM: the cluster's other processes (the
# pusher and the monitor) ignore it, so that django-q2 can still stop them in order.
HANDOFF_SIGNAL = signal.SIGUSR1

_state = {"stopping": False, "busy": False}


def stop_requested() -> bool:
    """True once this process was told to stop: its job ends at the next check and is queued again."""
    return _state["stopping"]


def _on_stop_signal(signum, frame) -> None:
    _state["stopping"] = True
    if not _state["busy"]:
        # Idle: blocked on django-q2's task queue. An exception (not os._exit) so that locks held
        # by a `with` on the way out are released.
        raise SystemExit(0)


def task_started(**kwargs) -> None:
    """Receiver of django-q2's pre_execute: any task (a job, the reaper, a sync schedule) is let
    finish its step rather than cut short by a stop signal."""
    _state["busy"] = True


def task_ended(**kwargs) -> None:
    """Receiver of django-q2's post_execute_in_worker: a worker told to stop leaves now, before it
    takes another task (whatever that task did is in the database)."""
    _state["busy"] = False
    if _state["stopping"]:
        raise SystemExit(0)


def install_worker_handlers(**kwargs) -> None:
    """Receiver of django-q2's post_spawn, sent in each new worker process."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, HANDOFF_SIGNAL):
        signal.signal(signum, _on_stop_signal)


@contextmanager
def busy() -> Iterator[None]:
    """While a job runs here, a stop signal asks it to stop instead of ending the process."""
    was_busy, _state["busy"] = _state["busy"], True
    try:
        yield
    finally:
        _state["busy"] = was_busy
