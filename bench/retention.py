"""Retention at scale: the plan of one policy over N points (rows only, no files).

    .venv/bin/python bench/retention.py [--points 10000] [--vms 100]

Prints the seconds and the database queries of planning the policy (what `prune --dry-run`, the
API's dry run and the preview page compute), and of the selection alone over one VM's points.
Uses a throwaway SQLite database.
"""

import argparse
import time
from datetime import timedelta

import checks
from workspace import open_workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100)
    args = parser.parse_args()
    work = open_workspace("bench-retention-")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from inventory.models import VM, Manager
    from policies.models import Policy
    from repository.models import BackupDestination, BackupPoint
    from repository.retention import PointInfo, plan_policy, select_expired

    (work / "repo").mkdir()
    destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))
    policy = Policy.objects.create(
        name="gfs", destination=destination, keep_last=7, keep_days=14, keep_daily=7, keep_weekly=4, keep_monthly=12
    )
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    now = timezone.now()
    per_vm = args.points // args.vms
    for n in range(args.vms):
        vm = VM.objects.create(manager=manager, engine_id=f"11111111-1111-1111-1111-{n:012d}", name=f"vm{n}")
        parent = None
        for day in range(per_vm):
            parent = BackupPoint.objects.create(
                vm=vm,
                destination=destination,
                policy=policy,
                strategy="image_transfer",
                status="complete",
                type="full" if day % 7 == 0 else "incremental",
                parent=None if day % 7 == 0 else parent,
                started=now - timedelta(days=per_vm - day),
            )
    total = BackupPoint.objects.count()

    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        plans = plan_policy(policy=policy, now=now)
        seconds = time.perf_counter() - started
    decisions = [d for plan in plans.values() for d in plan.decisions]
    counts = {a: sum(1 for d in decisions if d.action == a) for a in ("keep", "delete", "merge")}
    checks.equal("the points made", total, per_vm * args.vms)
    checks.equal("the points the plan decided on", len(decisions), total)
    checks.equal("the points kept, deleted or merged", sum(counts.values()), total)
    checks.at_least("the points kept", counts["keep"], "keep_last for each VM", min(per_vm, 7) * args.vms)
    checks.positive("the plan's seconds", seconds)
    checks.positive("the plan's queries", len(ctx))
    print(
        f"plan of one policy over {total} points of {args.vms} VMs: {seconds:.3f}s, {len(ctx)} queries "
        f"({counts['keep']} kept, {counts['delete']} deleted, {counts['merge']} merged)"
    )

    one = [
        PointInfo(i, now - timedelta(hours=i), i + 1 if i % 7 else None, "complete", "incremental" if i % 7 else "full")
        for i in range(args.points)
    ]
    started = time.perf_counter()
    plan = select_expired(one, keep_last=7, keep_days=14, daily=7, weekly=4, monthly=12, now=now)
    alone = checks.positive("the selection's seconds", time.perf_counter() - started)
    checks.equal("the points the selection decided on", len(plan.decisions), len(one))
    checks.at_least("the points the selection kept", len(plan.of("keep")), "keep_last", min(len(one), 7))
    print(f"selection alone over {len(one)} points of one VM: {alone:.3f}s, 0 queries ({len(plan.of('keep'))} kept)")
    checks.ratio(
        "retention", "plan with the database / selection alone (seconds per point)", seconds / total, alone / len(one)
    )
    checks.record("retention", f"plan's queries for {args.vms} VMs", len(ctx), unit=" queries")


if __name__ == "__main__":
    main()
