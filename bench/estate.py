"""A large estate (issue 22): the `large` seed synced, its pages and endpoints, one scheduler tick.

    .venv/bin/python bench/estate.py [--seed large] [--policies 50] [--runs 5] [--database-url postgres://...]

Starts `python -m ovirtsim serve --seed large` (5,000 VMs, 12,000 thin disks, 20 clusters, 60 hosts,
30 storage domains) in its own process, syncs it into a throwaway SQLite database (or the
PostgreSQL database given, emptied first) and prints: the engine's start time, the sync's API
calls, time and peak memory (this process's maximum resident set, as getrusage reports it), the
writes of a second sync (none but the manager's last_sync when nothing changed), then, with a
backup job and point per VM added, each list page's and endpoint's median time and queries
(through Django's test Client, logged in as an admin), and the scheduler tick's time and queries
with `--policies` policies due. Goals: a page under 300 ms, a tick under 1 s (on PostgreSQL).
"""

import argparse
import datetime
import resource
import statistics
import tempfile
import time

import checks
from workspace import open_workspace

PAGE_GOAL = 0.3
TICK_GOAL = 1.0
WRITES = ("INSERT", "UPDATE", "DELETE")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", default="large", help="large, or scale:N for a quicker look")
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5, help="requests per page; the median is printed")
    parser.add_argument("--database-url", default="", help="a PostgreSQL database to empty and use instead of SQLite")
    args = parser.parse_args()
    work = open_workspace("bench-estate-", database_url=args.database_url)
    import logging

    logging.getLogger("django-q").setLevel(logging.WARNING)
    logging.getLogger("audit").setLevel(logging.WARNING)  # not a line per policy run
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from core import roles
    from inventory.models import VM, Disk, Manager
    from inventory.sync import sync_manager
    from ovirtsim import Simulator

    print(f"database: {connection.vendor}; seed: {args.seed}")
    started = time.perf_counter()
    sim = Simulator(work / "engine", seed=args.seed, start_timeout=300).start()
    try:
        start_seconds = time.perf_counter() - started
        checks.positive("the engine's start time", start_seconds)
        print(f"engine started in {start_seconds:.1f}s (python -m ovirtsim serve --seed {args.seed})")
        manager = Manager.objects.create(name="estate", **sim.manager_fields)
        memory_before = peak_mib()
        before = sim.request_count()
        started = time.perf_counter()
        result = sync_manager(manager)
        sync_seconds = time.perf_counter() - started
        calls = sim.request_count() - before
        memory_after = peak_mib()
        counts = result["counts"]
        checks.positive("the VMs synced", counts["vms"])
        checks.positive("the disks synced", counts["disks"])
        checks.equal("the VM rows", VM.objects.count(), counts["vms"])
        checks.positive("the sync's API calls", calls)
        print(
            f"sync: {counts['vms']} VMs, {counts['disks']} disks, {counts['hosts']} hosts, {counts['clusters']} "
            f"clusters, {counts['storage_domains']} storage domains in {sync_seconds:.1f}s, {calls} API calls; "
            f"peak memory {memory_after:.0f} MiB (before the sync {memory_before:.0f} MiB)"
        )
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            sync_manager(manager)
            resync_seconds = time.perf_counter() - started
        writes = [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]
        inventory_writes = [w for w in writes if "inventory_manager" not in w]
        print(
            f"second sync (nothing changed): {resync_seconds:.1f}s, {len(writes)} writes "
            f"({len(inventory_writes)} to the inventory, the rest the manager's last_sync)"
        )
        if inventory_writes:
            checks.impossible(f"a sync of an unchanged engine wrote {len(inventory_writes)} inventory rows")
        checks.record("estate", "sync API calls", calls, goal="8 whatever the VMs", unit="")
        checks.record("estate", "sync seconds", sync_seconds, unit="s")
        checks.record("estate", "sync peak memory", memory_after, unit="MiB")
    finally:
        sim.stop()

    from repository.models import BackupDestination
    from tests.estate import add_history
    from tests.test_list_queries import ENDPOINTS, PAGES

    destination = BackupDestination.objects.create(name="estate", path=tempfile.mkdtemp(dir=work))
    vms = list(VM.objects.order_by("pk"))
    disks = list(Disk.objects.exclude(vm=None).order_by("vm_id", "pk"))
    add_history(vms, disks, destination)
    admin = get_user_model().objects.create_user("bench-admin", password="bench-password-1")
    roles.set_role(admin, roles.ADMIN)
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    slow, medians = [], {}
    print(f"list pages and endpoints with {len(vms)} VMs (median of {args.runs} requests, after one warm-up):")
    for url in PAGES + ENDPOINTS:
        client.get(url)  # what a first visit makes once
        times = []
        for _ in range(args.runs):
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - started)
            if response.status_code != 200:
                checks.impossible(f"{url} answered {response.status_code}")
        median = statistics.median(times)
        checks.positive(f"{url}'s time", median)
        mark = "" if median < PAGE_GOAL else f"  OVER the {PAGE_GOAL * 1000:.0f} ms goal"
        print(
            f"  {url:32s} {median * 1000:6.0f} ms  {len(ctx):3d} queries  {len(response.content) // 1024:5d} KiB{mark}"
        )
        medians[url] = median
        if mark:
            slow.append(url)
    for kind, urls in (("page", PAGES), ("endpoint", ENDPOINTS)):
        worst = max(urls, key=medians.get)
        label = f"slowest list {kind} ({worst})"
        checks.record("estate", label, medians[worst] * 1000, goal=f"< {PAGE_GOAL * 1000:.0f} ms", unit=" ms")
    tick_seconds, tick_queries, runs, jobs = scheduler_tick(manager, destination, args.policies)
    mark = "" if tick_seconds < TICK_GOAL else f"  OVER the {TICK_GOAL:.0f} s goal"
    print(
        f"scheduler tick ({connection.vendor}): {args.policies} policies due over {len(vms)} VMs: {runs} runs, "
        f"{jobs} backup jobs queued in {tick_seconds:.2f}s, {tick_queries} queries{mark}"
    )
    checks.record("estate", "scheduler tick", tick_seconds, goal=f"< {TICK_GOAL:.0f} s on PostgreSQL", unit="s")
    if slow:
        print(f"over the page goal: {', '.join(slow)}")


def scheduler_tick(manager, destination, policies: int) -> tuple[float, int, int, int]:
    """`policies` policies of every kind of rule (explicit lists, tag, cluster, name regex, with
    exclusions), all due at 01:00 tomorrow; one tick's seconds, queries, runs and jobs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from inventory.models import VM
    from jobs.models import Job
    from policies.models import Policy
    from policies.schedule import tick

    clusters = list(manager.cluster_set.order_by("name"))
    tags = list(manager.tag_set.order_by("name").values_list("name", flat=True))
    vm_ids = list(VM.objects.order_by("pk").values_list("pk", flat=True))
    created = timezone.now() - datetime.timedelta(days=1)
    for n in range(policies):
        kind = n % 4
        fields = {}
        if kind == 1:
            fields = {"match_tag": tags[n % len(tags)], "exclude_name_regex": "7$"}
        elif kind == 2:
            fields = {"match_cluster": clusters[n % len(clusters)], "exclude_tag": tags[(n + 1) % len(tags)]}
        elif kind == 3:
            fields = {"match_name_regex": rf"vm\d*{n % 10}$", "exclude_tag": tags[n % len(tags)]}
        policy = Policy.objects.create(
            name=f"estate-policy{n:02d}", priority=n, destination=destination, created=created, **fields
        )
        if kind == 0:
            policy.vms.add(*vm_ids[n * 20 : n * 20 + 20])
    due = timezone.make_aware(
        datetime.datetime.combine(timezone.localdate() + datetime.timedelta(days=1), datetime.time(1))
    )
    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        report = tick(now=due)
        seconds = time.perf_counter() - started
    jobs = Job.objects.filter(run__in=report.runs).count()
    checks.equal("the runs started", len(report.runs), policies)
    checks.positive("the backup jobs queued", jobs)
    checks.positive("the tick's seconds", seconds)
    return seconds, len(ctx), len(report.runs), jobs


if __name__ == "__main__":
    main()
