"""Destinations local to one node or shared by all (issue 22, item 3): each job reading or writing a
destination goes to a node that has its directory; the web process checks another node's directory
through a job on that node. Node rows and the ORM broker's queues here; real workers at the end."""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from core import roles
from inventory.models import VM, Cluster, Manager
from jobs.models import Job, Node
from jobs.runner import dispatch, run_job
from policies.models import Policy
from recovery.restore import restore_placement
from repository.models import BackupDestination, BackupPoint
from repository.retention import request_prune
from repository.storage import DestinationRefused
from repository.verify import request_verifies
from strategies.backup import backup_params
from tests.jobs.test_nodes import node, queues_of


@pytest.fixture
def site(db, roots):
    """Two VMs in two clusters; nodes n1 and n2 serve Production, n3 Development; a shared destination
    and one local to n2."""
    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    vms = {}
    for n, name in enumerate(["Production", "Development"]):
        cluster = Cluster.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-00000000c00{n}", name=name
        )
        for m in range(3):  # one active backup per VM: a test backs up several
            vms[name if m == 0 else f"{name}{m}"] = VM.objects.create(
                manager=manager,
                engine_id=f"00000000-0000-0000-000{m}-00000000a00{n}",
                name=f"vm-{name}{m or ''}",
                cluster=cluster,
            )
    node("n1", ["Production"])
    node("n2", ["Production"])
    node("n3", ["Development"])
    for name in ("nas", "disk-b"):
        (roots / name).mkdir()
    shared = BackupDestination.objects.create(name="nas", path=str(roots / "nas"))
    local = BackupDestination.objects.create(name="disk-b", path=str(roots / "disk-b"), node_id="n2")
    return {"vms": vms, "shared": shared, "local": local, "manager": manager}


@pytest.fixture
def roots(settings, tmp_path):
    inside = tmp_path / "roots"
    inside.mkdir()
    settings.BACKUP_ROOTS = [str(inside)]
    return inside


def backup_to(vm: VM, destination: BackupDestination) -> Job:
    params = backup_params(strategy="image_transfer", type="full", destination=destination)
    job = Job.objects.create(kind="backup", vm=vm, manager=vm.manager, name=vm.name, params=params)
    dispatch(job.pk, kind=job.kind)
    job.refresh_from_db()
    return job


def point_on(vm: VM, destination: BackupDestination, **fields) -> BackupPoint:
    fields = {"status": "complete", **fields}
    return BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer", **fields)


def test_it_sends_a_backup_to_the_node_its_destination_is_local_to(site):
    production = site["vms"]["Production"]
    # n1 and n2 serve the VM's cluster; n1 comes first between equals, but only n2 has the directory.
    local = backup_to(production, site["local"])
    assert (local.params["local_to"], local.sent_to, queues_of(local)) == ("n2", "n2", ["node-n2"])
    shared = backup_to(site["vms"]["Production1"], site["shared"])
    assert "local_to" not in shared.params and shared.sent_to == "n1"

    # A VM whose cluster n2 does not serve: nothing may run it; the job says why, naming both rules.
    waiting = backup_to(site["vms"]["Development"], site["local"])
    assert queues_of(waiting) == [] and waiting.sent_to == ""
    assert waiting.waiting_for == (
        "no online node serves cluster Development and holds destination disk-b (local to node n2) "
        "(n1 serves Production; n2 serves Production; n3 serves Development); it starts when one joins"
    )
    Node.objects.filter(name="n2").update(status=Node.Status.LOST)
    lost = backup_to(site["vms"]["Production2"], site["local"])
    assert lost.waiting_for == (
        "no online node serves cluster Production and holds destination disk-b (local to node n2) "
        "(n1 serves Production; n3 serves Development; n2 is lost); it starts when one joins"
    )


def test_it_restores_on_the_node_holding_the_points_destination(site):
    production = site["vms"]["Production"]
    point = point_on(production, site["local"])
    job = Job.objects.create(kind="restore", vm=production, params={"point": point.pk, "cluster": ""})
    rule = restore_placement(job)
    assert (rule.node, sorted(rule.clusters)) == ("n2", ["Production"])
    job.params["cluster"] = "Development"  # restored into a cluster n2 does not serve: no node may
    assert [n.name for n in Node.objects.all() if restore_placement(job).admits(n)] == []
    shared = point_on(production, site["shared"])
    job.params = {"point": shared.pk, "cluster": ""}
    assert [n.name for n in Node.objects.all() if restore_placement(job).admits(n)] == ["n1", "n2"]


def test_it_splits_a_verify_and_a_prune_by_where_their_backups_are(site, django_capture_on_commit_callbacks):
    """One job cannot read another node's directory: a verify or prune over backups in several places
    is one job per place, each sent where it can read them."""
    production = site["vms"]["Production"]
    policy = Policy.objects.create(name="p", destination=site["local"])
    on_nas = point_on(production, site["shared"], policy=policy)
    on_b = point_on(production, site["local"], policy=policy)

    with django_capture_on_commit_callbacks(execute=True):
        first, second = request_verifies(origin="cli", points=[on_b, on_nas])
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.params, first.name, first.sent_to) == (
        {"points": [on_nas.pk], "local_to": ""},
        f"backup {on_nas.pk} on shared destinations",
        "",  # any node: the site's queue
    )
    assert (second.params, second.name, queues_of(second)) == (
        {"points": [on_b.pk], "local_to": "n2"},
        f"backup {on_b.pk} on destinations local to node n2",
        ["node-n2"],
    )
    assert first.events.get().message == (
        f"The backups on destinations local to node n2 are verified there, by job {second.pk}."
    )
    every = request_verifies(origin="cli")
    assert [(j.params, j.name) for j in every] == [
        ({"points": None, "local_to": ""}, "every backup on shared destinations"),
        ({"points": None, "local_to": "n2"}, "every backup on destinations local to node n2"),
    ]
    only_b = request_verifies(origin="cli", points=[on_b])
    assert [(j.params["local_to"], j.name) for j in only_b] == [("n2", f"backup {on_b.pk}")]

    with django_capture_on_commit_callbacks(execute=True):
        prune = request_prune(policy=policy, origin="cli", vm=production)
    other = Job.objects.get(kind="retention", params__local_to="n2")
    assert (prune.params, Job.objects.get(pk=prune.pk).sent_to) == ({"vm": production.pk, "local_to": ""}, "")
    assert (other.name, queues_of(other)) == ("p: vm-Production on destinations local to node n2", ["node-n2"])
    Node.objects.filter(name="n2").update(status=Node.Status.DRAINING)
    dispatch(other.pk, kind=other.kind)
    other.refresh_from_db()
    assert other.waiting_for == (
        "no online node holds the destinations local to node n2 (disk-b) (n1 serves Production; "
        "n3 serves Development; n2 is draining); it starts when one joins"
    )


def test_it_runs_a_prune_on_the_destinations_of_its_place_only(site, settings, django_capture_on_commit_callbacks):
    production = site["vms"]["Production"]
    policy = Policy.objects.create(name="p", destination=site["shared"], keep_last=1)
    old_nas, new_nas = (point_on(production, site["shared"], policy=policy) for _ in range(2))
    old_b, new_b = (point_on(production, site["local"], policy=policy) for _ in range(2))
    BackupPoint.objects.filter(pk__in=[old_nas.pk, old_b.pk]).update(started="2026-01-01T00:00Z")
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}  # each job runs here as it is queued
    with django_capture_on_commit_callbacks(execute=True):
        shared = request_prune(policy=policy, origin="cli")
    shared.refresh_from_db()
    assert shared.status == Job.Status.SUCCEEDED, shared.error
    assert shared.result["deleted"] == [old_nas.pk]
    # The job for n2's directory ran here too (no node runs this test), and refused to read it.
    local = Job.objects.get(kind="retention", params__local_to="n2")
    assert local.status == Job.Status.FAILED
    assert "The destination disk-b is local to node n2, and this is node" in local.error
    assert BackupPoint.objects.filter(pk=old_b.pk, status="complete").exists()
    # On n2 it prunes its own directory, and nothing of the shared one.
    settings.NODE_NAME = "n2"
    again = Job.objects.create(kind="retention", started_by=policy, name="p", params={"vm": None, "local_to": "n2"})
    run_job(again.pk)
    again.refresh_from_db()
    assert (again.status, again.result["deleted"]) == (Job.Status.SUCCEEDED, [old_b.pk]), again.error
    assert set(BackupPoint.objects.values_list("pk", flat=True)) == {new_nas.pk, new_b.pk}


def test_it_refuses_another_nodes_directory_here(site):
    with pytest.raises(DestinationRefused) as refused:
        site["local"].checked_path()
    assert str(refused.value).startswith("The destination disk-b is local to node n2, and this is node ")
    assert str(refused.value).endswith(f": its directory {site['local'].path} is read and written on n2 only.")


def test_it_names_the_nodes_when_a_destination_names_an_unknown_one(site, api_as, client, users, roots):
    (roots / "x").mkdir()
    body = {"name": "x", "kind": "filesystem", "path": str(roots / "x"), "node": "nx"}
    response = api_as(roles.ADMIN).post(reverse("api:destination-list"), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["node"] == ["No node is named 'nx' (nodes: n1, n2, n3)."]
    client.force_login(users[roles.ADMIN])
    page = client.post(reverse("destination-new"), body)
    assert page.status_code == 200
    assert page.context["form"].errors["node"] == ["No node is named 'nx' (nodes: n1, n2, n3)."]
    assert not BackupDestination.objects.filter(name="x").exists()


def test_it_keeps_the_node_of_a_destination_holding_backups(site, api_as, client, users):
    api = api_as(roles.ADMIN)
    local = site["local"]
    point_on(site["vms"]["Production"], local)
    url = reverse("api:destination-detail", args=[local.pk])
    moved = api.patch(url, {"node": "n1"}, format="json")
    assert moved.status_code == 400
    refused = (
        "Destination disk-b holds 1 backup(s) in its directory, local to node n2: it stays where their files are. "
        "Delete its backups first, or add a new destination for the other place."
    )
    assert moved.json()["error"]["fields"]["node"] == [refused]
    shared = api.patch(url, {"node": None}, format="json")
    assert shared.status_code == 400 and "disk-b holds 1 backup(s)" in shared.json()["error"]["fields"]["node"][0]
    client.force_login(users[roles.ADMIN])
    page = client.post(
        reverse("destination-edit", args=[local.pk]), {"name": "disk-b", "kind": "filesystem", "path": local.path}
    )
    assert page.context["form"].errors["node"][0].startswith("Destination disk-b holds 1 backup(s)")
    assert BackupDestination.objects.get(pk=local.pk).node_id == "n2"
    # Renamed, or disabled: it keeps its node, and nothing is refused.
    assert api.patch(url, {"name": "disk-b2", "enabled": False}, format="json").status_code == 200
    # Without backups (deleted ones' files are gone), it may move.
    BackupPoint.objects.update(status="deleted")
    assert api.patch(url, {"node": "n1"}, format="json").status_code == 200


def test_it_saves_another_nodes_directory_unread_and_has_that_node_check_it(
    site, api_as, client, users, settings, django_capture_on_commit_callbacks
):
    """The web process cannot read n2's directory: it checks what the path says, saves it, and a job on
    n2 records what n2 finds there; the page shows where each destination is and what its node found."""
    api = api_as(roles.ADMIN)
    outside = api.post(
        reverse("api:destination-list"),
        {"name": "out", "kind": "filesystem", "path": "/srv/../etc", "node": "n2"},
        format="json",
    )
    assert outside.status_code == 400
    assert outside.json()["error"]["fields"]["path"][0].startswith("/srv/../etc (it comes to /etc) is not under")
    path = f"{settings.BACKUP_ROOTS[0]}/only-on-b"  # no such directory here: n2 has it
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(
            reverse("api:destination-list"),
            {"name": "b2", "kind": "filesystem", "path": path, "node": "n2"},
            format="json",
        )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["node"], body["capacity_bytes"], body["checked"], body["check_error"]) == ("n2", None, None, "")
    check = Job.objects.get(kind="destination_check")
    assert (check.params, queues_of(check)) == ({"destination": body["id"], "path": path, "node": "n2"}, ["node-n2"])

    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("destination-list")).content.decode()
    assert "<td>shared</td>" in page and "<td>local to node n2</td>" in page
    assert "not checked yet by node n2" in page

    # On n2: the directory is missing there too; then made, behind a link.
    settings.NODE_NAME = "n2"
    run_job(check.pk)
    check.refresh_from_db()
    missing = f"Checked on node n2: {path} does not exist: create it (or mount the share) first."
    assert (check.status, check.error) == (Job.Status.FAILED, missing)
    assert BackupDestination.objects.get(pk=body["id"]).check_error == missing
    client.force_login(users[roles.VIEWER])
    assert missing in client.get(reverse("destination-list")).content.decode()

    real = f"{settings.BACKUP_ROOTS[0]}/b-disk"
    os.mkdir(real)
    os.symlink(real, path)
    again = Job.objects.create(
        kind="destination_check", name="b2", params={"destination": body["id"], "path": path, "node": "n2"}
    )
    run_job(again.pk)
    again.refresh_from_db()
    assert again.status == Job.Status.SUCCEEDED, again.error
    checked = BackupDestination.objects.get(pk=body["id"])
    assert (checked.real_path, checked.check_error) == (real, "")
    assert checked.capacity_bytes > 0 and checked.checked is not None
    assert checked.checked_path() == Path(real)  # as n2 reads it from now on


def test_it_leaves_a_lost_nodes_unfinished_backup_in_its_own_directory_to_that_node(site, api_as, settings):
    """Another node cannot reach it (nor delete a backup there, from the API): the unfinished point
    waits for n2, which removes it when it joins again, before it takes work."""
    from jobs.tasks import clean_up_left_here, give_up_on

    vm = site["vms"]["Production"]
    job = Job.objects.create(kind="backup", vm=vm, manager=vm.manager, name=vm.name, params={})
    job.start(node="n2")
    point = point_on(vm, site["local"], job=job, status="running")
    written = Path(site["local"].path) / str(vm.engine_id) / str(point.uuid)
    written.mkdir(parents=True)
    (written / "disk.qcow2").write_bytes(b"half")
    Node.objects.filter(name="n2").update(status=Node.Status.LOST)

    assert give_up_on(job, "The node n2 running this job was lost.")
    job.refresh_from_db()
    assert "Its unfinished point on disk-b is removed by n2, which wrote it." in job.error
    assert BackupPoint.objects.get(pk=point.pk).status == "running" and written.is_dir()

    kept = point_on(vm, site["local"])
    refused = api_as(roles.ADMIN).delete(reverse("api:backup-detail", args=[kept.pk]))
    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("The destination disk-b is local to node n2, and this is")
    assert BackupPoint.objects.filter(pk=kept.pk, status="complete").exists()

    settings.NODE_NAME = "n2"  # n2 joins again
    assert clean_up_left_here() == 1
    assert BackupPoint.objects.get(pk=point.pk).status == "failed" and not written.exists()
