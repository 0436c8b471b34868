"""Two real worker nodes on one site (PostgreSQL; the ORM broker, then Redis): backups routed by the
VMs' clusters, one node killed mid-backup (SIGKILL to its process group), the other node's work unharmed,
the lost node's backup failed and undone, and the node's work resumed when it joins again."""

import os
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from inventory.models import VM
from jobs.models import Job, Node
from jobs.tasks import reap_abandoned_jobs
from strategies.backup import request_backup
from tests.helpers import assert_clean_engine, start_worker, wait_until_data_moves
from tests.jobs.test_broker import redis_broker as redis_broker  # a fixture
from tests.jobs.test_worker_stop import leave_engine_as_found, stop_as_systemd
from tests.ovirtsim.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_node(name: str, clusters: str, **env: str) -> subprocess.Popen:
    return start_worker(NODE_NAME=name, NODE_CLUSTERS=clusters, WORKERS="1", **env)


def online(name: str) -> bool:
    return Node.objects.filter(name=name, status=Node.Status.ONLINE).exists()


@pytest.fixture(params=["orm", "redis"])
def broker_env(request, tmp_path) -> dict[str, str]:
    """The nodes' broker: the database (the embedded default), or a Redis server of the test's own, which
    this process then uses too."""
    if request.param == "orm":
        return {}
    server = request.getfixturevalue("redis_broker")
    server["start"](tmp_path)
    return {"REDIS_URL": f"redis://127.0.0.1:{server['port']}/6"}


def test_it_routes_backups_by_cluster_and_survives_a_lost_node(manager, destination, demo_sim, settings, broker_env):
    prod = start_node("prod-node", "Production", **broker_env)
    dev = start_node("dev-node", "Development", **broker_env)
    try:
        wait_for(lambda: online("prod-node") and online("dev-node"), timeout=60, what="both nodes to join")
        big = VM.objects.get(manager=manager, name="bigdata01")  # Development: a backup of seconds
        web = VM.objects.get(manager=manager, name="web01")  # Production
        doomed = request_backup(vm=big, origin="cli", destination=destination, type="full")
        wait_until_data_moves(doomed, while_alive=lambda: dev.poll() is None)
        survivor = request_backup(vm=web, origin="cli", destination=destination, type="full")
        os.killpg(dev.pid, signal.SIGKILL)  # the whole node, as a machine that lost power
        dev.wait()

        wait_for(lambda: Job.objects.get(pk=survivor.pk).is_final, timeout=120, what="the Production backup")
        survivor.refresh_from_db()
        assert (survivor.status, survivor.node) == (Job.Status.SUCCEEDED, "prod-node"), survivor.error
        doomed.refresh_from_db()
        assert (doomed.status, doomed.node, doomed.sent_to) == (Job.Status.RUNNING, "dev-node", "dev-node")

        # Silent for NODE_LOST_AFTER (its last heartbeat moved back by that much rather than waited
        # for): any node's reaper, here the test's, marks it lost.
        last = Node.objects.get(name="dev-node").heartbeat
        Node.objects.filter(name="dev-node").update(heartbeat=last - timedelta(seconds=settings.NODE_LOST_AFTER))
        assert reap_abandoned_jobs() == 1
        assert Node.objects.get(name="dev-node").status == Node.Status.LOST
        doomed.refresh_from_db()
        assert doomed.status == Job.Status.FAILED
        assert doomed.error.startswith("The node dev-node running this job was lost (no heartbeat for "), doomed.error
        assert doomed.engine_objects == []
        with demo_sim.connect() as conn:
            assert_clean_engine(conn, str(big.engine_id), set())

        # Development has no node now: a backup there waits, saying so, until dev-node joins again.
        app = VM.objects.get(manager=manager, name="app01")
        waiting = request_backup(vm=app, origin="cli", destination=destination, type="full")
        wait_for(lambda: Job.objects.get(pk=waiting.pk).waiting_for, timeout=30, what="the backup to wait")
        assert Job.objects.get(pk=waiting.pk).waiting_for.startswith(
            "no online node serves cluster Development (prod-node serves Production)"
        )
        dev = start_node("dev-node", "Development", **broker_env)
        wait_for(lambda: Job.objects.get(pk=waiting.pk).is_final, timeout=120, what="the waiting backup")
        waiting.refresh_from_db()
        assert (waiting.status, waiting.node) == (Job.Status.SUCCEEDED, "dev-node"), waiting.error
    finally:
        stopped = [(w.pid, stop_as_systemd(w, whole_group=True), w.returncode) for w in (prod, dev) if w.poll() is None]
    # Both stopped within seconds, cleanly (a worker whose main process failed exits 1, its row online).
    assert [(killed, code) for _, killed, code in stopped] == [([], 0), ([], 0)]
    assert {n.name: n.status for n in Node.objects.all()} == {"prod-node": "stopped", "dev-node": "stopped"}
    for vm_name in ("web01", "app01"):
        leave_engine_as_found(demo_sim, VM.objects.get(manager=manager, name=vm_name))


def test_it_runs_a_backup_on_the_node_its_destination_is_local_to(manager, demo_sim, tmp_path):
    """Both nodes serve the VM's cluster, and node-a comes first between equals: the backup runs on
    node-b, the only one with the destination's directory."""
    from repository.models import BackupDestination, BackupPoint

    nodes = [start_node("node-a", "Development"), start_node("node-b", "Development")]
    vm = VM.objects.get(manager=manager, name="test01")
    try:
        wait_for(lambda: online("node-a") and online("node-b"), timeout=60, what="both nodes to join")
        (tmp_path / "disk-b").mkdir()
        local = BackupDestination.objects.create(name="disk-b", path=str(tmp_path / "disk-b"), node_id="node-b")
        job = request_backup(vm=vm, origin="cli", destination=local, type="full")
        wait_for(lambda: Job.objects.get(pk=job.pk).is_final, timeout=120, what="the backup")
        job.refresh_from_db()
        assert (job.status, job.sent_to, job.node) == (Job.Status.SUCCEEDED, "node-b", "node-b"), job.error
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert (tmp_path / "disk-b" / str(vm.engine_id) / str(point.uuid) / "manifest.json").is_file()
    finally:
        stopped = [stop_as_systemd(w, whole_group=True) for w in nodes if w.poll() is None]
        leave_engine_as_found(demo_sim, vm)
    assert stopped == [[], []]


def test_it_stops_a_running_node_once_the_site_moved_to_another_version(db):
    """A newer node migrated the shared database: a node still running the old code stops at its next
    heartbeat, saying why, rather than reading the site with code that no longer matches it."""
    from core.models import SiteVersion

    worker = start_worker(
        NODE_NAME="old-node", WORKERS="1", NODE_HEARTBEAT="1", NODE_LOST_AFTER="30", stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: online("old-node"), timeout=60, what="the node to join")
        SiteVersion.objects.update(version="99.0.0")
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            stop_as_systemd(worker, whole_group=True)
    err = worker.stderr.read()
    assert "Node old-node stops: This node runs version 0.1.0 of the code, and the site version 99.0.0" in err, err
    assert Node.objects.get(name="old-node").status == Node.Status.STOPPED
