"""Stopping a worker node without losing or half-doing a job.

systemd stops a service by sending SIGTERM to every process of its group (or, with
KillMode=mixed, to the main process only, which `manage.py worker` passes on to its workers as
SIGUSR1). A django-q2 worker process that gets either signal while it runs a job asks the job to
stop at its next check, as a cancel does: the job's cleanup runs (image transfer cancelled,
snapshot removed, unfinished backup directory discarded) and the job goes back to the queue, to
start again from the beginning on the next worker. An idle worker simply exits.
"""

import os
import signal
import threading
import time
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
    _watch_stop_signals()


# Seconds the main thread has to act on a stop signal itself before the watcher ends an idle worker.
IDLE_EXIT_GRACE = 2.0


def _watch_stop_signals() -> None:
    """Python runs signal handlers in the main thread only, and only once it runs again. Linux hands a
    process-directed signal to any thread that can take it: with SIGTERM from systemd and the hand-off
    from `manage.py worker` arriving together, one of them can land in a helper thread (the result
    queue's feeder) while the main thread sleeps in django-q2's blocking read of its task queue, and the
    worker idles on for ever. The wakeup fd gets a byte for every signal whichever thread took it; this
    thread reads it, marks the stop, and ends the process if it is still idle after a grace period (an
    idle worker has nothing to clean up; a busy one stops at its job's next check)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    wanted = {int(signal.SIGTERM), int(HANDOFF_SIGNAL)}

    def watch() -> None:
        while True:
            got = os.read(read_end, 64)
            if not got or not wanted.intersection(got):
                continue
            _state["stopping"] = True
            time.sleep(IDLE_EXIT_GRACE)
            if not _state["busy"]:
                os._exit(0)

    threading.Thread(target=watch, name="stop-signal-watcher", daemon=True).start()


@contextmanager
def busy() -> Iterator[None]:
    """While a job runs here, a stop signal asks it to stop instead of ending the process."""
    was_busy, _state["busy"] = _state["busy"], True
    try:
        yield
    finally:
        _state["busy"] = was_busy
