"""Large estates (issue 22): a sync's API calls do not grow with the VMs, and a sync that finds
the engine unchanged writes nothing."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import VM, Disk
from inventory.sync import sync_manager
from tests.conftest import register_manager

WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory):
    from ovirtsim import Simulator

    with Simulator(tmp_path_factory.mktemp("scale-10"), seed="scale:10") as sim:
        yield sim


@pytest.fixture(scope="module")
def bigger_sim(tmp_path_factory):
    from ovirtsim import Simulator

    with Simulator(tmp_path_factory.mktemp("scale-200"), seed="scale:200") as sim:
        yield sim


def _writes(ctx) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]


def test_it_asks_the_engine_as_many_times_for_200_vms_as_for_10(db, small_sim, bigger_sim):
    calls = {}
    for sim in (small_sim, bigger_sim):
        manager = register_manager(sim, name=f"m{id(sim)}")
        before = sim.request_count()
        result = sync_manager(manager)
        calls[result["counts"]["vms"]] = sim.request_count() - before
    assert calls == {10: 8, 200: 8}


def test_it_writes_nothing_when_the_engine_is_unchanged(db, bigger_sim):
    manager = register_manager(bigger_sim)
    with CaptureQueriesContext(connection) as first:
        sync_manager(manager)
    assert VM.objects.filter(manager=manager).count() == 200 and Disk.objects.filter(manager=manager).count() == 200
    # The first sync writes in batches, not a statement per VM.
    assert len(_writes(first)) < 30, _writes(first)
    synced = dict(VM.objects.values_list("pk", "synced"))
    with CaptureQueriesContext(connection) as second:
        sync_manager(manager)
    # Only the manager's own record of the sync (its last_sync) is written.
    writes = _writes(second)
    assert len(writes) == 1 and "inventory_manager" in writes[0], writes
    assert dict(VM.objects.values_list("pk", "synced")) == synced
