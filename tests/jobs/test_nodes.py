"""Worker nodes: joining, placement of jobs on the node that must run them, draining, and a node whose
heartbeat stopped (issue 22). Rows here; real worker processes in test_nodes_workers.py."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from inventory.models import VM, Cluster, Manager
from jobs.models import Job, Node
from jobs.nodes import NodeError, drain, join_site, undrain
from jobs.runner import dispatch, dispatch_waiting
from jobs.tasks import reap_abandoned_jobs


def queues_of(job: Job) -> list[str]:
    """The queues holding a task of the job."""
    return [row.key for row in OrmQ.objects.all() if SignedPackage.loads(row.payload).get("args", (None,))[0] == job.pk]


@pytest.fixture
def estate(db):
    """VMs in two oVirt clusters, and a third cluster no node serves."""
    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    vms = {}
    for n, name in enumerate(["Production", "Development", "Lab"]):
        cluster = Cluster.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-00000000c00{n}", name=name
        )
        vms[name] = VM.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-00000000a00{n}", name=f"vm-{name}", cluster=cluster
        )
    return vms


def backup_of(vm: VM) -> Job:
    return Job.objects.create(kind="backup", vm=vm, manager=vm.manager, name=vm.name, params={})


def node(name: str, clusters: list[str], **fields) -> Node:
    return Node.objects.create(name=name, version="0.1.0", slots=2, clusters=clusters, address=name, **fields)


def test_it_sends_a_backup_to_a_node_serving_the_vms_cluster_and_makes_one_wait_that_none_serves(estate):
    node("n1", ["Production"])
    node("n2", ["Development"])
    development, lab = backup_of(estate["Development"]), backup_of(estate["Lab"])
    dispatch(development.pk, kind=development.kind)
    dispatch(lab.pk, kind=lab.kind)
    development.refresh_from_db()
    assert (development.sent_to, queues_of(development)) == ("n2", ["node-n2"])
    lab.refresh_from_db()
    assert queues_of(lab) == [] and lab.dispatched is None
    assert lab.waiting_for == (
        "no online node serves cluster Lab (n1 serves Production; n2 serves Development); it starts when one joins"
    )
    assert lab.events.get().message == f"Waiting: {lab.waiting_for}"

    # A node serving every cluster joins (what its worker does at start): the waiting backup goes there.
    join_site(name="n3", slots=2, clusters=[])
    assert dispatch_waiting() == 1
    lab.refresh_from_db()
    assert (lab.sent_to, queues_of(lab), lab.waiting_for) == ("n3", ["node-n3"], "")


def test_it_spreads_jobs_over_the_nodes_that_may_run_them_by_load(estate):
    """The least busy node that serves the cluster, per worker (jobs it runs or was sent); by name
    between equals. A node not serving the cluster gets none."""
    node("n1", ["Production"])
    node("n2", [])
    node("n3", ["Production", "Development"])
    node("n4", ["Development"])
    sent = []
    for n in range(4):
        vm = VM.objects.create(
            manager=estate["Production"].manager,
            engine_id=f"00000000-0000-0000-0000-00000000b00{n}",
            name=f"p{n}",
            cluster=estate["Production"].cluster,
        )
        job = backup_of(vm)
        dispatch(job.pk, kind=job.kind)
        sent.append(Job.objects.get(pk=job.pk).sent_to)
    assert sent == ["n1", "n2", "n3", "n1"]


def test_it_uses_the_sites_queue_while_every_node_serves_every_cluster(estate):
    """The embedded default: one node serving every cluster; a job any node may run goes to the
    queue every node takes from."""
    join_site(name="only", slots=2, clusters=[])
    job = backup_of(estate["Lab"])
    dispatch(job.pk, kind=job.kind)
    job.refresh_from_db()
    assert (job.sent_to, queues_of(job)) == ("", ["backup"])


def test_it_sends_nothing_to_a_draining_node(estate):
    node("n1", ["Production"])
    drained = drain("n1", by="alice")
    assert (drained.status, drained.status_reason) == (Node.Status.DRAINING, "drained by alice")
    job = backup_of(estate["Production"])
    dispatch(job.pk, kind=job.kind)
    job.refresh_from_db()
    assert queues_of(job) == []
    assert job.waiting_for == "no worker node is online (n1 is draining); it starts when one joins"
    with pytest.raises(NodeError, match="Node n1 is already draining."):
        drain("n1")
    undrain("n1")
    assert dispatch_waiting() == 1
    job.refresh_from_db()
    assert queues_of(job) == ["node-n1"]


def test_it_names_what_is_wrong_with_a_drain(db):
    node("n1", [], status=Node.Status.LOST, heartbeat=timezone.now() - timedelta(hours=1))
    with pytest.raises(NodeError, match=r"No node is named 'nx' \(nodes: n1\)\."):
        drain("nx")
    with pytest.raises(NodeError, match="Node n1 is lost .*: it runs nothing to drain; its jobs were failed."):
        drain("n1")
    with pytest.raises(NodeError, match=r"Node n1 is not draining \(it is lost\)\."):
        undrain("n1")


def test_it_refuses_a_second_live_node_of_the_same_name(db, settings):
    first = join_site(name="n1", slots=2, clusters=["Production"])
    Node.objects.filter(pk=first.pk).update(address="backup-02.example.com")
    with pytest.raises(NodeError, match=r"A node named n1 is already online on backup-02.example.com \(last heartbeat"):
        join_site(name="n1", slots=2, clusters=[])
    # Silent for longer than NODE_LOST_AFTER: the name is free to take.
    Node.objects.filter(pk=first.pk).update(heartbeat=timezone.now() - timedelta(seconds=settings.NODE_LOST_AFTER + 1))
    again = join_site(name="n1", slots=4, clusters=[])
    assert (again.status, again.slots, again.clusters) == (Node.Status.ONLINE, 4, [])
    for bad in ("", "two words", "a/b"):
        with pytest.raises(NodeError, match="is not a node name"):
            join_site(name=bad, slots=1, clusters=[])


def test_it_marks_a_silent_node_lost_fails_what_it_ran_and_sends_elsewhere_what_it_had_not_started(estate, settings):
    silent_since = timezone.now() - timedelta(seconds=settings.NODE_LOST_AFTER + 5)
    node("n1", ["Production"], heartbeat=silent_since)
    node("n2", [])
    running = backup_of(estate["Production"])
    running.start(node="n1")
    not_started = backup_of(estate["Development"])
    Job.objects.filter(pk=not_started.pk).update(sent_to="n1", dispatched=silent_since)

    assert reap_abandoned_jobs() == 1
    assert Node.objects.get(name="n1").status == Node.Status.LOST
    running.refresh_from_db()
    assert running.status == Job.Status.FAILED
    assert running.error.startswith("The node n1 running this job was lost (no heartbeat for ")
    not_started.refresh_from_db()
    # n2, the one node left, serves every cluster: the site's queue, which it takes from.
    assert (not_started.status, not_started.sent_to, queues_of(not_started)) == (Job.Status.QUEUED, "", ["backup"])
    # A heartbeat does not bring a lost node back: it must join again.
    from jobs.nodes import beat

    assert beat("n1") == "lost"
    assert Node.objects.get(name="n1").status == Node.Status.LOST


def test_it_sends_again_a_job_a_node_took_that_its_placement_does_not_admit(estate, settings):
    """A task taken from the site's queue by a node that does not serve the VM's cluster (the nodes
    changed after it was sent) is not run there: it goes to a node that serves it."""
    from jobs.runner import run_job

    node(settings.NODE_NAME, ["Development"])
    node("n2", ["Production"])
    job = backup_of(estate["Production"])
    assert run_job(job.pk) == Job.Status.QUEUED
    job.refresh_from_db()
    assert (job.started, job.sent_to, queues_of(job)) == (None, "n2", ["node-n2"])


def test_it_lists_and_drains_nodes_from_the_command_line(db, capsys):
    node("n1", ["Production", "Development"])
    call_command("nodes")
    out = capsys.readouterr().out
    assert "n1" in out and "online" in out and "Production, Development" in out
    call_command("drain", "n1")
    assert capsys.readouterr().out == "Node n1 is draining: it finishes its running jobs and is sent no new ones.\n"
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Node n1 is already draining."):
        call_command("drain", "n1")
    with pytest.raises(CommandError, match=r"No node is named 'n9' \(nodes: n1\)\."):
        call_command("drain", "n9")
    call_command("drain", "n1", "--undo")
    assert capsys.readouterr().out == "Node n1 takes new jobs again.\n"


def test_it_shows_nodes_to_viewers_and_lets_only_admins_drain_them(db, api_as, client, users):
    node("n1", [])
    node("n2", ["Lab"], status=Node.Status.LOST, status_reason="no heartbeat for 90s")
    listed = api_as("viewer").get("/api/v1/nodes/")
    assert listed.status_code == 200
    assert [(n["name"], n["status"], n["running_jobs"]) for n in listed.json()] == [
        ("n1", "online", 0),
        ("n2", "lost", 0),
    ]
    assert api_as("operator").post("/api/v1/nodes/n1/drain/").status_code == 403
    assert api_as("admin").post("/api/v1/nodes/n9/drain/").status_code == 404
    drained = api_as("admin").post("/api/v1/nodes/n1/drain/")
    assert (drained.status_code, drained.json()["status"]) == (200, "draining")
    refused = api_as("admin").post("/api/v1/nodes/n2/drain/")
    assert refused.status_code == 400 and "Node n2 is lost" in str(refused.json())

    client.force_login(users["viewer"])
    page = client.get("/jobs/nodes/").content.decode()
    assert "n1" in page and "Draining" in page and "no heartbeat for 90s" in page and "Drain</button>" not in page
    client.force_login(users["admin"])
    page = client.get("/jobs/nodes/").content.decode()
    assert "Take jobs again</button>" in page


def test_it_lists_nodes_in_as_many_queries_whatever_their_number(db, client, users, api_as):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(users["viewer"])
    api = api_as("viewer")
    api.get("/api/v1/nodes/")  # the token's first use is recorded once
    counts = []
    for total in (2, 20):
        for n in range(Node.objects.count(), total):
            node(f"n{n:02d}", [])
        with CaptureQueriesContext(connection) as page:
            assert client.get("/jobs/nodes/").status_code == 200
        with CaptureQueriesContext(connection) as listed:
            response = api.get("/api/v1/nodes/")
        assert response.status_code == 200 and len(response.json()) == total
        counts.append((len(page), len(listed)))
    assert counts[0] == counts[1], counts


def test_it_hands_on_a_job_a_draining_node_took_from_the_sites_queue(estate, settings):
    from jobs.runner import run_job

    node(settings.NODE_NAME, [], status=Node.Status.DRAINING)
    node("n2", [])
    job = backup_of(estate["Lab"])
    assert run_job(job.pk) == Job.Status.QUEUED
    job.refresh_from_db()
    assert (job.started, job.sent_to, queues_of(job)) == (None, "n2", ["node-n2"])


def test_it_hands_out_a_policy_runs_jobs_reading_the_nodes_once(estate):
    """A run queues thousands of backups: each costs its own hand-over (its row, its task), the nodes
    and the jobs are read once per batch, however many there are."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.runner import dispatch_many

    node("n1", ["Production"])
    node("n2", ["Development"])
    cluster = estate["Production"].cluster
    counts = []
    for batch in (5, 25):
        jobs = []
        for n in range(batch):
            vm = VM.objects.create(
                manager=cluster.manager, engine_id=f"00000000-0000-0000-{batch:04d}-{n:012d}", name=f"v{batch}-{n}"
            )
            VM.objects.filter(pk=vm.pk).update(cluster=cluster)
            jobs.append(backup_of(vm))
        with CaptureQueriesContext(connection) as queries:
            dispatch_many([(job.pk, job.kind) for job in jobs])
        assert {Job.objects.get(pk=j.pk).sent_to for j in jobs} == {"n1"}
        counts.append(len(queries))
    per_job = (counts[1] - counts[0]) / 20
    assert per_job <= 2, counts  # the job's row updated, its task queued
