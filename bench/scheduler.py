"""The policy ticker at scale: one tick with N VMs and P policies.

    .venv/bin/python bench/scheduler.py [--vms 5000] [--policies 50] [--database-url postgres://...]

Builds the rows directly (no engine: a tick reads only the database) in a throwaway SQLite
database: VMs spread over clusters and tags, policies of every kind of rule (explicit lists, tag,
cluster, name regex, with exclusions), all due at 01:00. Prints, for a small and the large
inventory, the queries and seconds of the tick that starts every run (its jobs handed to the ORM
broker), and of the next tick, which has nothing to start. The query count must not grow with
the VMs (the jobs of a run are one executemany).
"""

import argparse
import datetime
import time

import checks
from workspace import open_workspace


def build(vms: int, policies: int, tag: str) -> None:
    from django.utils import timezone

    from inventory.models import VM, Cluster, Manager, Tag
    from policies.models import Policy
    from repository.models import BackupDestination

    manager = Manager.objects.create(
        name=f"m-{tag}", api_url="https://e.example/ovirt-engine/api", username="a", password="x"
    )
    clusters = Cluster.objects.bulk_create(
        Cluster(manager=manager, engine_id=f"00000000-0000-0000-0001-{n:012d}", name=f"cluster{n}") for n in range(5)
    )
    tags = Tag.objects.bulk_create(
        Tag(manager=manager, engine_id=f"00000000-0000-0000-0002-{n:012d}", name=f"{tag}-tag{n}") for n in range(20)
    )
    rows = VM.objects.bulk_create(
        VM(
            manager=manager,
            engine_id=f"00000000-0000-0000-0003-{n:012d}",
            name=f"{tag}-vm{n:05d}",
            cluster=clusters[n % 5],
        )
        for n in range(vms)
    )
    VM.tags.through.objects.bulk_create(
        VM.tags.through(vm_id=vm.pk, tag_id=tags[n % 20].pk) for n, vm in enumerate(rows)
    )
    destination = BackupDestination.objects.create(name=f"d-{tag}", path=f"/tmp/bench-scheduler-{tag}")
    created = timezone.make_aware(datetime.datetime(2026, 1, 1, 12))
    for n in range(policies):
        kind = n % 4
        fields = {}
        if kind == 1:
            fields = {"match_tag": f"{tag}-tag{n % 20}", "exclude_name_regex": "7$"}
        elif kind == 2:
            fields = {"match_cluster": clusters[n % 5], "exclude_tag": f"{tag}-tag{(n + 1) % 20}"}
        elif kind == 3:
            fields = {"match_name_regex": rf"vm\d*{n % 10}$", "exclude_tag": f"{tag}-tag{n % 20}"}
        policy = Policy.objects.create(
            name=f"{tag}-policy{n:02d}",
            priority=n,
            destination=destination,
            schedule="0 1 * * *",
            created=created,
            **fields,
        )
        if kind == 0:
            policy.vms.add(*rows[n * 20 : n * 20 + 20])


def measure(label: str, now, *, runs: int) -> tuple[int, float]:
    """One tick at `now`, which must start `runs` policy runs (and a backup job for each VM they cover)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from policies.schedule import tick

    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        report = tick(now=now)
        elapsed = time.perf_counter() - started
    jobs = sum(run.jobs.count() for run in report.runs)
    checks.equal(f"{label}: the runs started", len(report.runs), runs)
    if runs:
        checks.positive(f"{label}: the backup jobs queued", jobs)
    checks.positive(f"{label}: its queries", len(ctx))
    checks.positive(f"{label}: its seconds", elapsed)
    print(f"  {label}: {len(report.runs)} runs, {jobs} backup jobs queued: {len(ctx)} queries, {elapsed:.3f}s")
    return len(ctx), elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--database-url", default="", help="a PostgreSQL database to empty and use instead of SQLite")
    args = parser.parse_args()
    open_workspace("bench-scheduler-", database_url=args.database_url)
    import logging

    logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per task handed to the broker
    from django.db import connection

    print(f"database: {connection.vendor}")
    from django.utils import timezone

    from inventory.models import VM
    from jobs.models import Job
    from policies.models import Policy

    figures = {}
    for label, vms in (("small", 100), ("large", args.vms)):
        Job.objects.all().delete()
        Policy.objects.all().delete()
        VM.objects.all().delete()
        started = time.perf_counter()
        build(vms, args.policies, label)
        print(f"{label}: {vms} VMs and {args.policies} policies built in {time.perf_counter() - started:.1f}s")
        due = timezone.make_aware(datetime.datetime(2026, 1, 2, 1))
        figures[label] = measure("tick at 01:00 (every policy due)", due, runs=args.policies)
        measure("tick at 01:01 (nothing due)", due + datetime.timedelta(minutes=1), runs=0)
    (small_queries, small_seconds), (large_queries, large_seconds) = figures["small"], figures["large"]
    growth = f"{args.vms // 100}x the VMs"
    checks.ratio("scheduler", f"due tick's queries, large / small ({growth})", large_queries, small_queries, goal="~1")
    checks.ratio("scheduler", f"due tick's seconds, large / small ({growth})", large_seconds, small_seconds)


if __name__ == "__main__":
    main()
