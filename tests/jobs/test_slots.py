"""Concurrency limits hold across worker processes: each job's slots (engine, host, storage domains,
policy, node) are counted and claimed in one transaction, so two nodes never both take a last place."""

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs.models import Job
from tests.helpers import start_worker
from tests.jobs.test_worker_stop import stop_as_systemd

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"manager": 3, "host": 1, "storage_domain": 2, "policy": 1, "node": 2}


def start_node(name: str) -> subprocess.Popen:
    """`manage.py worker` as node `name` with two worker processes, knowing the tests' job kind."""
    return start_worker(
        DJANGO_SETTINGS_MODULE="tests.jobs.slot_settings",
        NODE_NAME=name,
        WORKERS=str(LIMITS["node"]),
        MAX_JOBS_PER_MANAGER=str(LIMITS["manager"]),
        MAX_JOBS_PER_HOST=str(LIMITS["host"]),
        MAX_JOBS_PER_STORAGE_DOMAIN=str(LIMITS["storage_domain"]),
    )


def estate(settings):
    """An engine with 4 hosts and 2 storage domains, 8 VMs spread over them, and a policy whose
    parallel VMs is 1: each limit is the one that binds for some of the jobs."""
    from inventory.models import VM, Disk, Host, Manager, StorageDomain
    from policies.models import Policy
    from repository.models import BackupDestination

    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    hosts = [
        Host.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-0000000000a{n}", name=f"h{n}")
        for n in range(4)
    ]
    domains = [
        StorageDomain.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-0000000000d{n}", name=f"sd{n}"
        )
        for n in range(2)
    ]
    vms = []
    for n in range(8):
        vm = VM.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-00000000010{n}", name=f"vm{n}", host=hosts[n % 4]
        )
        Disk.objects.create(
            manager=manager,
            engine_id=f"00000000-0000-0000-0001-00000000010{n}",
            name=f"vm{n}-disk",
            vm=vm,
            storage_domain=domains[n % 2],
        )
        vms.append(vm)
    destination = BackupDestination.objects.create(name="d", path=settings.BACKUP_ROOTS[0])
    policy = Policy.objects.create(name="p", destination=destination, parallel_vms=LIMITS["policy"])
    return manager, vms, policy


def holders(vm_domains: dict[int, int]) -> Counter:
    """How many running jobs hold each slot now, read from the jobs themselves (one query)."""
    held = Counter()
    running = Job.objects.running().filter(kind="test-slots")
    for vm_id, host_id, manager_id, policy_id, node in running.values_list(
        "vm_id", "vm__host_id", "manager_id", "started_by_id", "node"
    ):
        held[f"manager:{manager_id}"] += 1
        held[f"host:{host_id}"] += 1
        held[f"storage_domain:{vm_domains[vm_id]}"] += 1
        held[f"node:{node}"] += 1
        if policy_id:
            held[f"policy:{policy_id}"] += 1
    return held


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_never_exceeds_a_limit_with_two_nodes_claiming_at_once(settings):
    from jobs.runner import dispatch

    manager, vms, policy = estate(settings)
    vm_domains = {vm.pk: vm.disks.get().storage_domain_id for vm in vms}
    jobs = [
        Job.objects.create(
            kind="test-slots",
            vm=vms[n % len(vms)],
            manager=manager,
            started_by=policy if n % 5 == 0 else None,
            name=f"job {n}",
            params={"seconds": 0.2},
        )
        for n in range(48)
    ]
    nodes = [start_node("n1"), start_node("n2")]
    most: Counter = Counter()
    samples = 0
    try:
        for job in jobs:  # all at once: the two nodes' four workers take them as fast as they can
            dispatch(job.pk, kind=job.kind)
        deadline = time.monotonic() + 180
        while Job.objects.filter(pk__in=[j.pk for j in jobs]).active().exists():
            assert time.monotonic() < deadline, "the jobs did not all end within 3 minutes"
            assert all(node.poll() is None for node in nodes), "a worker node stopped"
            for key, count in holders(vm_domains).items():
                most[key] = max(most[key], count)
            samples += 1
            time.sleep(0.005)
    finally:
        for node in nodes:
            stop_as_systemd(node, whole_group=True)

    over = {key: n for key, n in most.items() if n > LIMITS[key.split(":")[0]]}
    assert over == {}, f"limits exceeded at some sampled moment (most holders seen: {dict(most)})"
    assert samples > 50
    # Each limit was reached, so each was put to the test; and both nodes ran jobs.
    reached = {key.split(":")[0] for key, n in most.items() if n == LIMITS[key.split(":")[0]]}
    assert reached >= {"host", "storage_domain", "policy", "node"}, dict(most)
    assert {"node:n1", "node:n2"} <= set(most)
    statuses = Counter(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True))
    assert statuses == {Job.Status.SUCCEEDED: len(jobs)}
    started = Counter(
        Job.objects.filter(pk__in=[j.pk for j in jobs], events__message__startswith="Started on").values_list(
            "pk", flat=True
        )
    )
    assert set(started.values()) == {1}, "a job was started twice"
