"""`manage.py worker`: django-q2's cluster, stopped within seconds without losing a job.

On SIGTERM or SIGINT (systemd with KillMode=mixed signals only this process) it hands the stop to
every worker process first (jobs.shutdown: the running job's cleanup runs and the job goes back to
the queue), then lets django-q2 stop its cluster in order. When systemd signals the whole group
instead, each worker gets SIGTERM itself and does the same.
"""

import os
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.cluster import Cluster

from core.site import check_node_can_join
from jobs.shutdown import HANDOFF_SIGNAL


def children_of(pid: int) -> list[int]:
    children = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return children


class Command(BaseCommand):
    help = "Run the job worker (django-q2 cluster); SIGTERM stops it within seconds, requeueing running jobs."

    def handle(self, *args, **options) -> None:
        check_node_can_join(settings.NODE_NAME)  # the site's keys and version, else it refuses (core.site)
        # Inherited by the cluster's processes: the pusher and monitor ignore the hand-off, the
        # workers install their own handler when they start (jobs.shutdown).
        signal.signal(HANDOFF_SIGNAL, signal.SIG_IGN)
        cluster = Cluster()
        stop_requested = threading.Event()

        def request_stop(signum, frame) -> None:
            if cluster.sentinel is None:
                raise SystemExit(0)  # stopped before the cluster started: nothing to hand over
            # A second signal (Ctrl-C twice, systemd and a person) adds nothing: one stop is under way.
            # The stop itself is left to the main thread: a signal that lands while the cluster is
            # still starting its sentinel would find nothing to stop yet, and be lost.
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        cluster.start()
        while cluster.sentinel.is_alive():
            if stop_requested.wait(0.5):
                for pid in children_of(cluster.sentinel.pid):
                    try:
                        os.kill(pid, HANDOFF_SIGNAL)
                    except ProcessLookupError:
                        pass
                # From a thread: django-q2 stops its sentinel by setting a multiprocessing Event, and
                # that blocks for ever when the sentinel died waiting on it, as it does when systemd
                # signals the whole group. Here the process leaves as soon as the sentinel is gone.
                threading.Thread(target=cluster.stop, daemon=True).start()
                cluster.sentinel.join()
