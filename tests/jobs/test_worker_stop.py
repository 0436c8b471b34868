"""Stopping and killing the worker cluster (`manage.py worker`) as systemd and crashes do: no job is
lost or left stuck, and a stop takes seconds, not the length of a backup."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inventory.models import VM
from jobs.models import Job
from jobs.tasks import reap_abandoned_jobs
from repository.models import BackupPoint
from strategies.backup import request_backup
from tests import helpers
from tests.helpers import assert_clean_engine, wait_until_data_moves, worker_env
from tests.ovirtsim.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN = 30  # seconds, as systemd's TimeoutStopSec in the README's unit


def start_worker(workers: int = 1) -> subprocess.Popen:
    return helpers.start_worker(WORKERS=str(workers))


def group_members(pgid: int) -> list[str]:
    """Live processes of the group (state and command line); zombies are gone but for their parent."""
    members = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                members.append(f"{proc.name} {fields[0]} {cmdline[:120]}")
        except (OSError, ValueError, IndexError):
            continue
    return members


def stop_as_systemd(worker: subprocess.Popen, *, whole_group: bool) -> list[str]:
    """Stop the worker as systemd does: SIGTERM (to the group by default, to the main process with
    KillMode=mixed), then, after TimeoutStopSec, SIGKILL to whatever of the group is left. Returns
    what systemd would have killed: a stop that took too long is seen in what it leaves behind
    (processes killed, and their jobs abandoned), not measured."""
    if whole_group:
        os.killpg(worker.pid, signal.SIGTERM)
    else:
        os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WITHIN
    while (worker.poll() is None or group_members(worker.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = group_members(worker.pid)
    if killed:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    return killed


def leave_engine_as_found(demo_sim, vm: VM) -> None:
    from ovirt.snapshots import remove_snapshot

    with demo_sim.connect() as conn:
        for point in BackupPoint.objects.filter(vm=vm).exclude(base_id=""):
            remove_snapshot(conn, str(vm.engine_id), point.base_id)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("whole_group", [True, False], ids=["systemd-default", "killmode-mixed"])
def test_it_stops_within_seconds_and_runs_the_interrupted_backup_again(manager, destination, demo_sim, whole_group):
    vm = VM.objects.get(manager=manager, name="bigdata01")
    job = request_backup(vm=vm, origin="cli", destination=destination, type="full")
    worker = start_worker()
    try:
        wait_until_data_moves(job, while_alive=lambda: worker.poll() is None)
    finally:
        killed = stop_as_systemd(worker, whole_group=whole_group)
    assert killed == [], f"still running {STOP_WITHIN}s after SIGTERM, killed as systemd would: {killed}"

    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED, job.error
    assert job.events.filter(message__contains="was stopped while running this job").exists()
    assert job.bytes_done == 0 and job.engine_objects == []
    assert not BackupPoint.objects.filter(vm=vm).kept().exists()
    assert [p.name for p in Path(destination.path).glob("*")] == []
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), set())

    # The next start runs it from the beginning: its task was handed back to the broker.
    worker = start_worker()
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).is_final, timeout=180, what="the requeued backup")
    finally:
        killed = stop_as_systemd(worker, whole_group=whole_group)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert killed == [], f"the idle worker was still running {STOP_WITHIN}s after SIGTERM: {killed}"
    leave_engine_as_found(demo_sim, vm)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_loses_no_job_when_the_whole_worker_is_killed(manager, destination, demo_sim):
    """SIGKILL to every process of the worker while one backup runs and another waits in the
    worker's own queue (its task taken from the broker): after the reaper, the running one is
    failed and undone, the waiting one runs on the next worker, and no VM stays blocked."""
    big = VM.objects.get(manager=manager, name="bigdata01")
    small = VM.objects.get(manager=manager, name="web01")
    running = request_backup(vm=big, origin="cli", destination=destination, type="full")
    worker = start_worker()
    try:
        wait_until_data_moves(running, while_alive=lambda: worker.poll() is None)
        waiting = request_backup(vm=small, origin="cli", destination=destination, type="full")
        # The worker's pusher takes its task from the broker at once, to run next (its prefetch).
        wait_for(lambda: not _tasks_waiting_in_broker(), what="the worker to take the second task")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert Job.objects.get(pk=waiting.pk).status == Job.Status.QUEUED

    assert reap_abandoned_jobs(timeout_seconds=0) == 1
    running.refresh_from_db()
    assert running.status == Job.Status.FAILED and "stopped responding" in running.error
    assert Job.objects.get(pk=waiting.pk).events.filter(message__startswith="Handed to the workers again").exists()

    worker = start_worker()
    try:
        wait_for(lambda: Job.objects.get(pk=waiting.pk).is_final, timeout=120, what="the lost job to run")
        again = request_backup(vm=big, origin="cli", destination=destination, type="full")  # not "already queued"
        wait_for(lambda: Job.objects.get(pk=again.pk).is_final, timeout=180, what="a new backup of the VM")
    finally:
        killed = stop_as_systemd(worker, whole_group=True)
    assert killed == [], f"still running {STOP_WITHIN}s after SIGTERM, killed as systemd would: {killed}"
    assert Job.objects.get(pk=waiting.pk).status == Job.Status.SUCCEEDED
    assert Job.objects.get(pk=again.pk).status == Job.Status.SUCCEEDED
    leave_engine_as_found(demo_sim, big)
    leave_engine_as_found(demo_sim, small)


def _tasks_waiting_in_broker() -> int:
    from jobs.tasks import job_ids_in_broker

    return len(job_ids_in_broker())


IDLE_WORKER = """
import os, signal, threading, time
from jobs import shutdown

shutdown.install_worker_handlers()
main_tid = threading.get_native_id()
reading = threading.Event()

def helper():
    # A helper thread of the worker (as the result queue's feeder) that takes the stop signal itself,
    # once the main thread sleeps in its read.
    reading.wait()
    stat = f"/proc/self/task/{main_tid}/stat"
    while open(stat).read().rsplit(")", 1)[1].split()[0] != "S":
        time.sleep(0.01)
    time.sleep(0.2)
    signal.pthread_kill(threading.get_ident(), signal.{signal})
    threading.Event().wait()

threading.Thread(target=helper, daemon=True).start()
read_end, write_end = os.pipe()
reading.set()
os.read(read_end, 1)  # idle: blocked on the task queue, as django-q2's worker waits for work
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_it_ends_an_idle_worker_whose_stop_signal_landed_in_a_helper_thread(signame):
    """Python runs signal handlers in the main thread only; a signal Linux gave to another thread
    leaves a main thread blocked in a read asleep. The worker still stops, within seconds."""
    proc = subprocess.Popen([sys.executable, "-c", IDLE_WORKER.replace("{signal}", signame)], cwd=ROOT)
    try:
        assert proc.wait(20) == 0
    finally:
        proc.kill()


# manage.py worker whose stop signal arrives while its cluster is still starting: after the sentinel
# process object is made, before it runs (the moment a Ctrl-C lands when `make run` is interrupted
# as it starts).
SIGNAL_WHILE_STARTING = """
import multiprocessing.process, os, signal
import django
django.setup()
from django.core.management import call_command

real_start = multiprocessing.process.BaseProcess.start
sent = []

def start(self):
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, in the main thread, before the fork
    real_start(self)

multiprocessing.process.BaseProcess.start = start
call_command("worker")
"""


@pytest.mark.django_db(transaction=True)
def test_it_stops_when_the_signal_lands_while_the_cluster_starts():
    worker = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_WHILE_STARTING],
        env=worker_env(WORKERS="1"),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert worker.wait(STOP_WITHIN) == 0, worker.stderr.read().decode(errors="replace")[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_WITHIN}s after the stop signal: {group_members(worker.pid)}")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
