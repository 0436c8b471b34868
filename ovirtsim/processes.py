"""Children that die with the simulator: a killed simulator must not leave a VM's qemu holding the
images the next start needs, nor a host's sshd listening on its port."""

import ctypes
import queue
import signal
import subprocess
import threading
from concurrent.futures import Future

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_spawn_queue: queue.SimpleQueue | None = None
_spawn_lock = threading.Lock()


def _die_with_parent() -> None:
    # In the child, before exec: the kernel kills it when the thread that forked it ends.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawner(requests: queue.SimpleQueue) -> None:
    while True:
        args, kwargs, future = requests.get()
        try:
            future.set_result(subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs))
        except BaseException as e:
            future.set_exception(e)


def spawn_with_engine(args: list[str], **kwargs) -> subprocess.Popen:
    """Popen from one thread that lives as long as the process, so the child dies with the process.

    A VM's qemu must not outlive a simulator that was killed (it would hold the images the next
    start needs): to qemu that is a crash, as when a host loses power. PR_SET_PDEATHSIG fires when
    the forking *thread* ends, hence one long-lived thread instead of the caller's worker thread.
    """
    global _spawn_queue
    with _spawn_lock:
        if _spawn_queue is None:
            _spawn_queue = queue.SimpleQueue()
            threading.Thread(target=_spawner, args=(_spawn_queue,), daemon=True, name="child-spawner").start()
    future: Future = Future()
    _spawn_queue.put((args, kwargs, future))
    return future.result()
