"""Deleting a backup point, with what is built on it, from the API, the page and the command line."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core import roles
from inventory.models import VM, Manager
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import assert_clean_engine, backup, kept_snapshots


def full_and_incremental(vm, destination) -> tuple[BackupPoint, BackupPoint]:
    jobs = [backup(vm, destination, type="full"), backup(vm, destination, type="incremental")]
    assert all(j.status == Job.Status.SUCCEEDED for j in jobs), [j.error for j in jobs]
    full, incremental = (BackupPoint.objects.get(pk=j.result["point"]) for j in jobs)
    assert incremental.parent == full and incremental.base_id
    return full, incremental


def test_it_deletes_a_point_with_its_dependants_only_when_asked_and_removes_the_chains_snapshot(
    manager, destination, demo_sim, api_as
):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    url = reverse("api:backup-detail", kwargs={"pk": full.pk})

    assert api_as(roles.VIEWER).delete(url).status_code == 403
    refused = api_as(roles.OPERATOR).delete(url)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["fields"] == {"dependants": [incremental.pk]}
    assert error["message"].startswith(f"Backup {full.pk} has 1 backup(s) built on it ({incremental.pk})")
    assert full.directory.path.exists() and BackupPoint.objects.kept().count() == 2
    bad = api_as(roles.OPERATOR).delete(url + "?with_dependants=maybe")
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "with_dependants: Must be true or false."

    deleted = api_as(roles.OPERATOR).delete(url + "?with_dependants=true")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": [incremental.pk, full.pk]}
    from core.models import AuditEvent

    entry = AuditEvent.objects.get(action="point_deleted")
    assert (entry.actor_name, entry.source, entry.details) == (
        "operator-user",
        "api",
        {"deleted": [incremental.pk, full.pk]},
    )
    assert not full.directory.path.exists() and not incremental.directory.path.exists()
    assert not BackupPoint.objects.filter(vm=vm).exists()
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), keep=kept_snapshots(vm))
        assert kept_snapshots(vm) == set()

    # Nothing refers to the destination or the manager's VMs any more: both can be removed.
    assert (
        api_as(roles.ADMIN).delete(reverse("api:destination-detail", kwargs={"pk": destination.pk})).status_code == 204
    )
    assert api_as(roles.ADMIN).delete(reverse("api:manager-detail", kwargs={"pk": manager.pk})).status_code == 204
    assert not Manager.objects.filter(pk=manager.pk).exists()


def test_it_deletes_the_newest_point_alone_from_the_page_and_keeps_the_full(
    manager, destination, demo_sim, client, users
):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)

    client.force_login(users[roles.VIEWER])
    assert client.get(reverse("point-delete", kwargs={"pk": full.pk})).status_code == 403
    client.force_login(users[roles.OPERATOR])
    listing = client.get(reverse("point-list"))
    assert reverse("point-delete", kwargs={"pk": full.pk}).encode() in listing.content
    page = client.get(reverse("point-delete", kwargs={"pk": full.pk}))
    assert b"1 backup(s) are built on it" in page.content and f"<td>{incremental.pk}</td>".encode() in page.content

    response = client.post(reverse("point-delete", kwargs={"pk": incremental.pk}))
    assert response.status_code == 302
    assert not BackupPoint.objects.filter(pk=incremental.pk).exists()
    full.refresh_from_db()
    assert full.status == "complete" and full.directory.path.exists()
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), keep=set())  # the chain's snapshot went with its newest point

    after = backup(vm, destination, type="incremental")
    point = BackupPoint.objects.get(pk=after.result["point"])
    assert point.type == "full", "its base is gone: the next backup is a full"


def test_it_deletes_from_the_command_line_only_with_dependants_named(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    with pytest.raises(CommandError, match=f"built on it \\({incremental.pk}\\).* Use --with-dependants."):
        call_command("delete_backup", str(full.pk), "--yes")
    with pytest.raises(CommandError, match="No backup point 999999."):
        call_command("delete_backup", "999999", "--yes")
    out = io.StringIO()
    call_command("delete_backup", str(full.pk), "--with-dependants", "--yes", stdout=out)
    assert out.getvalue().strip() == f"Deleted backup {incremental.pk}, {full.pk}"
    assert not BackupPoint.objects.filter(vm=vm).exists()


def test_it_refuses_to_delete_what_a_running_backup_builds_on_and_finishes_a_killed_delete(
    manager, destination, demo_sim
):
    from policies.models import Policy
    from repository.retention import prune_policy

    vm = VM.objects.get(manager=manager, name="test01")
    full, incremental = full_and_incremental(vm, destination)
    running = BackupPoint.objects.create(
        vm=vm, destination=destination, strategy="image_transfer", parent=incremental, type="incremental"
    )
    with pytest.raises(CommandError, match=f"A backup building on backup {incremental.pk} is running"):
        call_command("delete_backup", str(full.pk), "--with-dependants", "--yes")
    assert BackupPoint.objects.kept().count() == 2
    running.discard()  # failed: it never was a backup, and keeps nothing from being deleted

    # A delete killed after marking the row, before removing the files: the next prune finishes it.
    policy = Policy.objects.create(name="p", destination=destination, keep_last=5)
    BackupPoint.objects.filter(pk__in=[full.pk, incremental.pk]).update(policy=policy)
    BackupPoint.objects.filter(pk=incremental.pk).update(status="deleted")
    prune_policy(policy=policy, dry_run=False)
    assert not incremental.directory.path.exists()
    assert list(BackupPoint.objects.filter(vm=vm).values_list("pk", "status")) == [
        (running.pk, "failed"),
        (full.pk, "complete"),
    ]
    assert BackupPoint.objects.get(pk=running.pk).parent is None
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), keep=set())  # the snapshot its chain kept went too
