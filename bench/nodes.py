"""Throughput of two worker nodes (issue 22): N backups queued at once, limits sampled as they run.

    .venv/bin/python bench/nodes.py [--vms 200] [--workers 2] [--every-cluster] [--redis] [--postgres URL]

Starts the simulator's `scale:N:2` engine (N VMs, one thin 10 GiB disk each, taking turns over two
clusters, Default and cluster2, a host each, one shared storage domain; each image made, empty, when
first read), a PostgreSQL database of its own (bench_nodes_<pid>, created and dropped here, on the
server of `--postgres`, by default DATABASE_URL's or postgres://postgres@127.0.0.1:5432/postgres),
and two `manage.py worker` processes as nodes: n1 serving Default, n2 cluster2 (each backup routed
to its VM's node), or with `--every-cluster` both serving every cluster (each backup in the site's
queue, taken by whichever node is free); with the ORM broker, or with `--redis` a redis-server the
bench starts on a free port. First one backup alone: its time from queued to succeeded, and the time
its data moved (its job events, from "Downloading disk" to "Disk ...: N MiB stored"). Then a full
backup of every VM queued at once, while the slots running jobs hold (the JobSlot rows of running
jobs, and the running jobs per node) are sampled every few ms until every job is final. Prints the
jobs succeeded and failed, the most holders seen per slot key against its limit, the jobs started
more than once, the wall time, jobs per second and the queue's overhead per job: (wall time x the
nodes' workers - the sum of the jobs' data time) / jobs, against the single backup's (its wall time
- its data time). A limit exceeded, a job started twice, a job that succeeded having moved no bytes,
or a negative duration stops the bench with status 1.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import checks
from workspace import ROOT, open_workspace

NODES = ("n1", "n2")
CLUSTERS = ("Default", "cluster2")  # the seed's scale:N:2
DOWNLOADING = "Downloading disk "
STORED = re.compile(r"^Disk .+: \d+ MiB stored")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: run `make system-deps` (Debian package redis-server)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"redis-server did not answer on port {port} within 30 s")
        time.sleep(0.1)
    return server, f"redis://127.0.0.1:{port}/0"


def server_sql(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + name


def start_node(name: str, clusters: str, work: Path, workers: int) -> tuple[subprocess.Popen, Path]:
    """`manage.py worker` as node `name` serving `clusters` (empty: every one), its output in a file of `work`."""
    log = work / f"{name}.log"
    env = os.environ | {"NODE_NAME": name, "NODE_CLUSTERS": clusters, "WORKERS": str(workers)}
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return worker, log


def stop_node(worker: subprocess.Popen) -> None:
    """SIGTERM to its process group (as systemd stops it), SIGKILL after 30 s."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # what its group left (none, after a clean stop)
    except ProcessLookupError:
        pass


def data_seconds(job) -> float:
    """Seconds the job moved data: from each "Downloading disk" event to the "Disk ...: N MiB stored"
    that ends it (one disk after the other, as a backup does)."""
    total, begun, disks = 0.0, None, 0
    for time_, message in job.events.order_by("time", "pk").values_list("time", "message"):
        if message.startswith(DOWNLOADING):
            begun = time_
        elif STORED.match(message) and begun is not None:
            total += checks.positive(f"job {job.pk}'s data time of a disk", (time_ - begun).total_seconds())
            begun, disks = None, disks + 1
    if not disks:
        checks.impossible(f"job {job.pk} succeeded with no disk downloaded and stored in its events")
    return total


def check_succeeded(job) -> None:
    from jobs.models import Job

    if job.status != Job.Status.SUCCEEDED:
        return
    checks.positive(f"the bytes done of job {job.pk}, which succeeded", job.bytes_done)
    checks.positive(f"job {job.pk}'s time from queued to started", (job.started - job.created).total_seconds())
    checks.positive(f"job {job.pk}'s time from started to succeeded", (job.finished - job.started).total_seconds())


def wait_final(pks: list[int], nodes: list[subprocess.Popen], *, timeout: float, sample=None) -> int:
    """Until every job is final, calling `sample()` every few ms; returns the samples taken."""
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    samples = 0
    while Job.objects.filter(pk__in=pks).active().exists():
        if time.monotonic() > deadline:
            left = Job.objects.filter(pk__in=pks).active().count()
            raise SystemExit(f"{left} of {len(pks)} jobs were not final after {timeout:.0f} s")
        if any(node.poll() is not None for node in nodes):
            raise SystemExit("a worker node stopped before the jobs ended (its log is in the work directory)")
        if sample is not None:
            sample()
            samples += 1
        time.sleep(0.005)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=200, help="backups queued at once, one per VM")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per node (WORKERS)")
    parser.add_argument("--every-cluster", action="store_true", help="both nodes serve every cluster")
    parser.add_argument("--redis", action="store_true", help="a redis-server of the bench's as broker")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres",
        help="a database URL of the server to create the bench's database on (default: DATABASE_URL's)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds the backups may take")
    args = parser.parse_args()
    if args.vms < 1 or args.workers < 1:
        parser.error("--vms and --workers must be at least 1")
    name = f"bench_nodes_{os.getpid()}"
    server_sql(args.postgres, f"CREATE DATABASE {name}")
    redis = None
    try:
        if args.redis:
            redis, os.environ["REDIS_URL"] = start_redis(Path(tempfile.gettempdir()))
        else:
            os.environ.pop("REDIS_URL", None)
        os.environ["WORKERS"] = str(args.workers)  # the node slot's limit as this process counts it
        open_workspace("bench-nodes-", database_url=database_url(args.postgres, name))
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if redis is not None:
            redis.terminate()
            redis.wait()
        server_sql(args.postgres, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run(args) -> None:
    import logging

    logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per task handed to the broker
    from django.conf import settings
    from django.db.models import Count, Max, Min

    from inventory.models import VM, Manager
    from inventory.sync import sync_manager
    from jobs.kinds import slots_for
    from jobs.models import Job, JobEvent, JobSlot, Node
    from ovirtsim import Simulator
    from repository.models import BackupDestination
    from strategies.backup import request_backup

    work = Path(settings.DATA_DIR).parent
    broker = settings.Q_CLUSTER.get("redis", "").split("?")[0] or "the ORM (PostgreSQL)"
    print(f"database: PostgreSQL {settings.DATABASES['default']['NAME']}; broker: {broker}")
    started = time.perf_counter()
    sim = Simulator(work / "engine", seed=f"scale:{args.vms}:{len(CLUSTERS)}", start_timeout=300).start()
    nodes: list[subprocess.Popen] = []
    try:
        manager = Manager.objects.create(name="bench", **sim.manager_fields)
        sync_manager(manager)
        vms = list(VM.objects.filter(manager=manager).order_by("name"))
        checks.equal("the VMs synced", len(vms), args.vms)
        clusters = sorted({vm.cluster.name for vm in vms})
        print(
            f"engine scale:{args.vms}:{len(CLUSTERS)} started and synced in "
            f"{time.perf_counter() - started:.1f}s: clusters {clusters}"
        )
        (work / "repo").mkdir()
        destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))

        checks.equal("the seed's clusters", clusters, sorted(CLUSTERS))
        serves = {node: "" if args.every_cluster else cluster for node, cluster in zip(NODES, CLUSTERS, strict=True)}
        logs = {}
        for node in NODES:
            process, logs[node] = start_node(node, serves[node], work, args.workers)
            nodes.append(process)
        deadline = time.monotonic() + 120
        while Node.objects.filter(name__in=NODES, status=Node.Status.ONLINE).count() < len(NODES):
            if time.monotonic() > deadline or any(n.poll() is not None for n in nodes):
                tails = {n: logs[n].read_text()[-2000:] for n in NODES}
                raise SystemExit(f"the nodes did not both join within 120 s: {tails}")
            time.sleep(0.2)
        said = ", ".join(f"{node} serving {serves[node] or 'every cluster'}" for node in NODES)
        print(f"nodes online: {said}; {args.workers} workers each")

        # One backup alone: what a job costs besides moving its data, with nothing to wait for.
        single = request_backup(vm=vms[0], origin="cli", destination=destination, type="full")
        wait_final([single.pk], nodes, timeout=300)
        single.refresh_from_db()
        if single.status != Job.Status.SUCCEEDED:
            raise SystemExit(f"the single backup {single.status}: {single.error}")
        check_succeeded(single)
        single_wall = (single.finished - single.created).total_seconds()
        checks.positive("the single backup's wall time", single_wall)
        single_data = data_seconds(single)
        single_wait = (single.started - single.created).total_seconds()
        single_overhead = checks.positive("the single backup's overhead", single_wall - single_data)
        print(
            f"one backup alone (on {single.node}): {single_wall:.3f}s from queued to succeeded, of which "
            f"{single_data:.3f}s moving data ({single.bytes_done / 1024**3:.0f} GiB virtual read); "
            f"overhead {single_overhead:.3f}s (queued to started {single_wait:.3f}s)"
        )

        # Every VM's backup at once. The limits each key has, as the claims count them.
        JobSlot.objects.all().delete()  # none held: the single backup ended
        before_queue = time.perf_counter()
        jobs = [request_backup(vm=vm, origin="cli", destination=destination, type="full") for vm in vms]
        queue_seconds = time.perf_counter() - before_queue
        pks = [job.pk for job in jobs]
        limits: dict[str, int] = {}
        for job in jobs:
            for node in NODES:
                for slot in slots_for(job, node=node):
                    limits[slot["key"]] = slot["limit"]
        most: Counter = Counter()

        def sample() -> None:
            held = JobSlot.objects.held().filter(job_id__in=pks).order_by().values("key").annotate(n=Count("pk"))
            for row in held:
                most[row["key"]] = max(most[row["key"]], row["n"])
            running = Job.objects.filter(pk__in=pks).running().order_by().values("node").annotate(n=Count("pk"))
            for row in running:  # the running jobs themselves, whatever slots they claimed
                key = f"running on node:{row['node']}"
                most[key] = max(most[key], row["n"])

        samples = wait_final(pks, nodes, timeout=args.timeout, sample=sample)
        print(f"{len(pks)} backups queued in {queue_seconds:.2f}s; {samples} samples of the running jobs' slots")
    finally:
        for process in nodes:
            stop_node(process)
        sim.stop()

    every_cluster = args.every_cluster
    finished = list(Job.objects.filter(pk__in=pks).select_related("vm__cluster"))
    statuses = Counter(job.status for job in finished)
    for job in finished:
        check_succeeded(job)
    succeeded, failed = statuses[Job.Status.SUCCEEDED], statuses[Job.Status.FAILED]
    print(f"jobs: {succeeded} succeeded, {failed} failed (all by status: {dict(statuses)})")
    checks.positive("the jobs succeeded", statuses[Job.Status.SUCCEEDED])
    for job in finished:
        if job.status == Job.Status.FAILED:
            print(f"  job {job.pk} ({job.name}) failed: {job.error}")
    by_node = Counter(job.node for job in finished)
    print(f"jobs run per node: {dict(sorted(by_node.items()))}")
    if not every_cluster:  # each backup on the node serving its VM's cluster
        node_of = dict(zip(CLUSTERS, NODES, strict=True))
        astray = [j.pk for j in finished if j.node and j.node != node_of[j.vm.cluster.name]]
        if astray:
            checks.impossible(f"jobs {astray} ran on a node not serving their VM's cluster", "placement failed")

    print("most holders seen at once per slot key (limit):")
    over = []
    for key in sorted(most):
        limit = limits.get(key.removeprefix("running on "))
        if limit is None:
            checks.impossible(f"slot key {key} was held but no job declares it")
        mark = "  EXCEEDED" if most[key] > limit else ""
        print(f"  {key:32s} {most[key]:3d} ({limit}){mark}")
        if mark:
            over.append(key)
    if over:
        checks.impossible(f"limits exceeded at a sampled moment: {', '.join(over)}", "a limit did not hold")
    checks.positive("the samples taken", samples)

    starts = Counter(
        JobEvent.objects.filter(job_id__in=pks, message__startswith="Started on").values_list("job_id", flat=True)
    )
    twice = {pk: n for pk, n in starts.items() if n > 1}
    print(f"jobs started more than once: {len(twice)}")
    if twice:
        checks.impossible(f"jobs started more than once: {twice}", "a job ran twice")
    checks.equal("the jobs started once", len(starts), statuses[Job.Status.SUCCEEDED] + statuses[Job.Status.FAILED])

    span = Job.objects.filter(pk__in=pks).aggregate(first=Min("created"), last=Max("finished"))
    wall = checks.positive("the backups' wall time", (span["last"] - span["first"]).total_seconds())
    succeeded = [job for job in finished if job.status == Job.Status.SUCCEEDED]
    data = sum(data_seconds(job) for job in succeeded)
    workers = len(NODES) * args.workers
    overhead = checks.positive("the queue's overhead per job", (wall * workers - data) / len(succeeded))
    print(
        f"{len(succeeded)} backups in {wall:.1f}s: {len(succeeded) / wall:.2f} jobs/s; data moving "
        f"{data:.1f}s in all ({data / len(succeeded):.3f}s per job); overhead per job "
        f"(wall x {workers} workers - data time) / jobs = {overhead:.3f}s"
    )
    ratio = checks.ratio("nodes", f"overhead per job, {len(succeeded)} at once / one alone", overhead, single_overhead)
    print(f"overhead per job at once / one alone ({single_overhead:.3f}s): {ratio:.2f}x")
    checks.record("nodes", f"{len(succeeded)} backups on 2 nodes", len(succeeded) / wall, unit=" jobs/s")


if __name__ == "__main__":
    main()
