"""`manage.py worker`: a worker node of the site, stopped within seconds without losing a job.

It joins the site as node NODE_NAME (jobs.nodes: its row, refused if a live node has that name),
beats every NODE_HEARTBEAT seconds, and runs two django-q2 clusters: the site's (its queue takes
jobs any node may run, and its scheduler the site's schedules) and the node's own (`node-NAME`: jobs
placed on this node). It leaves the site (status stopped) when it stops.

On SIGTERM or SIGINT (systemd with KillMode=mixed signals only this process) it hands the stop to
every worker process first (jobs.shutdown: the running job's cleanup runs and the job goes back to
the queue), then lets django-q2 stop its cluster in order. When systemd signals the whole group
instead, each worker gets SIGTERM itself and does the same.
"""

import os
import signal
import threading
import time
from pathlib import Path

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
    help = (
        "Run a worker node (NODE_NAME): django-q2 clusters for the site's queue and the node's own; "
        "SIGTERM stops it within seconds, requeueing running jobs."
    )

    def handle(self, *args, **options) -> None:
        from django.conf import settings
        from django.core.management.base import CommandError
        from django.db import connections
        from django_q.brokers import get_broker

        from core.lvm_filter import read_lvm_config
        from jobs.nodes import ON_BEAT, ON_JOIN, NodeError, beat, join_site, leave_site, run_node_hooks
        from jobs.runner import dispatch_waiting
        from jobs.tasks import clean_up_left_here

        check_node_can_join(settings.NODE_NAME)  # the site's keys and version, else it refuses (core.site)
        name = settings.NODE_NAME
        try:
            node = join_site(
                name=name,
                slots=settings.Q_CLUSTER["workers"],
                clusters=settings.NODE_CLUSTERS,
                vm_id=settings.NODE_VM_ID,
                lvm_config=read_lvm_config(),  # a proxy's must hide the disks attached to it
            )
        except NodeError as e:
            raise CommandError(str(e)) from None
        cleaned = clean_up_left_here()  # before it takes work
        for failure in run_node_hooks(ON_JOIN):
            self.stderr.write(f"At the start of node {name}: {failure}")
        self.stdout.write(
            f"Node {node.name} joined the site ({node.get_status_display().lower()}; serves "
            f"{', '.join(node.clusters) or 'every cluster'}; {node.slots} workers"
            + (f"; undid what {cleaned} jobs had left here" if cleaned else "")
            + ")."
        )
        # Inherited by the clusters' processes: the pusher and monitor ignore the hand-off, the
        # workers install their own handler when they start (jobs.shutdown).
        signal.signal(HANDOFF_SIGNAL, signal.SIG_IGN)
        clusters = [Cluster(), Cluster(broker=get_broker(node.queue))]
        stop_requested = threading.Event()

        def request_stop(signum, frame) -> None:
            if all(c.sentinel is None for c in clusters) and not stop_requested.is_set():
                leave_site(name)
                raise SystemExit(0)  # stopped before the clusters started: nothing to hand over
            # A second signal (Ctrl-C twice, systemd and a person) adds nothing: one stop is under way.
            # The stop itself is left to the main thread: a signal that lands while a cluster is
            # still starting its sentinel would find nothing to stop yet, and be lost.
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        # The clusters' processes are forked from this one: a database connection open here would be
        # shared with them, and the first of them to close it breaks it for this process.
        connections.close_all()
        try:
            for cluster in clusters:
                cluster.start()
            try:
                dispatch_waiting()  # what waited for a node to join
            except Exception as e:  # the reaper hands them out at its next pass too
                self.stderr.write(f"Handing out the jobs that wait for a node failed: {e}")
            last_beat = 0.0
            while all(c.sentinel.is_alive() for c in clusters):
                if stop_requested.wait(0.5):
                    break
                if time.monotonic() - last_beat >= settings.NODE_HEARTBEAT:
                    last_beat = time.monotonic()
                    self.beat(name, beat)
                    for failure in run_node_hooks(ON_BEAT):
                        self.stderr.write(f"At the heartbeat of node {name}: {failure}")
        finally:
            self.stop(clusters)
            leave_site(name)

    def beat(self, name: str, beat) -> None:
        from django.db import close_old_connections

        try:
            status = beat(name)
        except Exception as e:  # the database away for a moment: the next beat tries again
            self.stderr.write(f"Heartbeat of node {name} failed: {e}")
            close_old_connections()
            return
        from core.site import version_problem

        if problem := version_problem():
            # Another node migrated the site to its version meanwhile: this code may not read it right.
            self.stderr.write(f"Node {name} stops: {problem}")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if status == "lost":
            self.stderr.write(
                f"Node {name} was marked lost while silent: its jobs were failed and undone elsewhere. "
                "It stops; start it again to rejoin."
            )
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(self, clusters: list[Cluster]) -> None:
        for cluster in clusters:
            if cluster.sentinel is None or not cluster.sentinel.is_alive():
                continue
            for pid in children_of(cluster.sentinel.pid):
                try:
                    os.kill(pid, HANDOFF_SIGNAL)
                except ProcessLookupError:
                    pass
        # From threads: django-q2 stops its sentinel by setting a multiprocessing Event, and that
        # blocks for ever when the sentinel died waiting on it, as it does when systemd signals the
        # whole group. Here the process leaves as soon as the sentinels are gone.
        for cluster in clusters:
            if cluster.sentinel is not None and cluster.sentinel.is_alive():
                threading.Thread(target=cluster.stop, daemon=True).start()
        for cluster in clusters:
            if cluster.sentinel is not None:
                cluster.sentinel.join()
