"""Inventory sync at scale: an engine with N VMs, synced through the real job code.

    .venv/bin/python bench/inventory_sync.py [--vms 2000]

Prints the sync's duration and API calls, and the inventory page's query count and render
time for a few VMs against N VMs (the count must not grow). Uses a throwaway SQLite database.
"""

import argparse
import time

import checks
from workspace import open_workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=2000)
    args = parser.parse_args()
    work = open_workspace("bench-inventory-")
    import django
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from core import roles
    from inventory.models import Manager
    from inventory.sync import sync_manager
    from ovirtsim import Simulator

    user = django.contrib.auth.get_user_model().objects.create_user("bench", password="bench-password-1")
    roles.set_role(user, roles.VIEWER)
    client = Client()
    client.force_login(user)

    def page_queries():
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            assert client.get("/inventory/", HTTP_HOST="localhost").status_code == 200
            elapsed = time.perf_counter() - started
        return len(ctx), elapsed

    results = {}
    for label, vms in (("small", 10), ("large", args.vms)):
        seed = f"scale:{vms}"
        started = time.perf_counter()
        with Simulator(work / f"engine-{label}", seed=seed) as sim:
            seeded = time.perf_counter() - started
            manager = Manager.objects.create(name=label, **sim.manager_fields)
            before = sim.request_count()
            started = time.perf_counter()
            result = sync_manager(manager)
            sync_seconds = time.perf_counter() - started
            calls = sim.request_count() - before
            resync_started = time.perf_counter()
            sync_manager(manager)
            resync_seconds = time.perf_counter() - resync_started
        queries, render = page_queries()
        checks.equal(f"{label}: the VMs synced", result["counts"]["vms"], vms)
        for what, figure in [("sync seconds", sync_seconds), ("API calls", calls), ("page queries", queries)]:
            checks.positive(f"{label}: {what}", figure)
        results[label] = (result["counts"]["vms"], sync_seconds, resync_seconds, calls, queries, render)
        print(
            f"{label}: engine seeded in {seeded:.1f}s; sync of {result['counts']['vms']} VMs and "
            f"{result['counts']['disks']} disks: {sync_seconds:.2f}s first, {resync_seconds:.2f}s again, "
            f"{calls} API calls; inventory page: {queries} queries, {render * 1000:.0f} ms"
        )
    small, large = results["small"], results["large"]
    vms = f"{large[0] // small[0]}x the VMs"
    checks.ratio(
        "inventory_sync", f"sync seconds per VM, large / small ({vms})", large[1] / large[0], small[1] / small[0]
    )
    checks.ratio("inventory_sync", f"inventory page queries, large / small ({vms})", large[4], small[4], goal="1.0")
    print(
        f"ratio large/small: sync time {large[1] / small[1]:.1f}x for {large[0] / small[0]:.0f}x the VMs; "
        f"API calls {large[3]}/{small[3]}; page queries {large[4]}/{small[4]}"
    )


if __name__ == "__main__":
    main()
