"""Inventory sync at scale: an engine with N VMs, synced through the real job code.

    .venv/bin/python bench/inventory_sync.py [--vms 2000]

Prints the sync's duration and API calls, and the inventory page's query count and render
time for a few VMs against N VMs (the count must not grow). Uses a throwaway SQLite database.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # gigabytes of images
    os.environ.update(DATA_DIR=str(work / "data"), DJANGO_SETTINGS_MODULE="backupsite.settings")
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from backupsite import roles
    from inventory.models import Manager
    from inventory.sync import sync_manager
    from ovirtsim import Simulator

    call_command("migrate", verbosity=0)
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
    for label, seed in (("small", "scale:10"), ("large", f"scale:{args.vms}")):
        started = time.perf_counter()
        with Simulator(work / f"engine-{label}", seed=seed) as sim:
            seeded = time.perf_counter() - started
            manager = Manager.objects.create(
                name=label,
                api_url=sim.api_url,
                username=sim.username,
                password=sim.password,
                ca_certificate=Path(sim.ca_file).read_text(),
            )
            before = sim.request_count()
            started = time.perf_counter()
            result = sync_manager(manager)
            sync_seconds = time.perf_counter() - started
            calls = sim.request_count() - before
            resync_started = time.perf_counter()
            sync_manager(manager)
            resync_seconds = time.perf_counter() - resync_started
        queries, render = page_queries()
        results[label] = (result["counts"]["vms"], sync_seconds, resync_seconds, calls, queries, render)
        print(
            f"{label}: engine seeded in {seeded:.1f}s; sync of {result['counts']['vms']} VMs and "
            f"{result['counts']['disks']} disks: {sync_seconds:.2f}s first, {resync_seconds:.2f}s again, "
            f"{calls} API calls; inventory page: {queries} queries, {render * 1000:.0f} ms"
        )
    small, large = results["small"], results["large"]
    print(
        f"ratio large/small: sync time {large[1] / small[1]:.1f}x for {large[0] / small[0]:.0f}x the VMs; "
        f"API calls {large[3]}/{small[3]}; page queries {large[4]}/{small[4]}"
    )


if __name__ == "__main__":
    main()
