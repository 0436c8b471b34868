"""A point booted by an instant restore is pinned through repository.claims, as a browsing session
pins the point it opens: deleting it (page, API) and pruning it are refused, saying what holds it,
while the instant restore is active; once its hold is released they go ahead. Over real tiny points
(the retention tests' synthetic history)."""

import re

import pytest

from core import roles
from inventory.models import VM, Cluster, Disk, Manager
from jobs.models import Job
from policies.models import Policy
from recovery.instant.workflow import request_instant_restore
from recovery.models import InstantRestore
from repository.claims import release_hold
from repository.models import BackupDestination, BackupPoint, PointClaim
from repository.retention import prune_policy
from tests.repository.test_retention import DISK_ID, NOW, synthetic_history


@pytest.fixture
def booted(db, tmp_path):
    """A full and an incremental of web01, the incremental booted by an instant restore."""
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    cluster = Cluster.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000c1", name="c1")
    vm = VM.objects.create(
        manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01", cluster=cluster
    )
    Disk.objects.create(manager=manager, vm=vm, engine_id=DISK_ID, name="web01_os")
    (tmp_path / "repo").mkdir()
    destination = BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    policy = Policy.objects.create(name="p", destination=destination, keep_last=1)
    full, incremental = synthetic_history(vm, destination, policy, 2)
    instant, job = request_instant_restore(point=incremental, name="web01-now", origin=Job.Origin.API)
    return {"full": full, "incremental": incremental, "instant": instant, "policy": policy}


def test_it_refuses_to_delete_or_prune_a_point_an_instant_restore_runs_from_until_its_hold_ends(
    client, api_as, users, booted
):
    full, incremental, instant = booted["full"], booted["incremental"], booted["instant"]
    assert instant.is_active and PointClaim.objects.filter(token=instant.claim).count() == 2  # the whole chain
    holder = f"booted by instant restore {instant.pk} (web01-now)"

    # The page: back to the list, saying what holds it.
    client.force_login(users[roles.OPERATOR])
    response = client.post(f"/backups/{incremental.pk}/delete/", follow=True)
    assert response.redirect_chain == [("/backups/", 302)]
    flash = re.search(r'<p class="flash error">(.*?)</p>', response.content.decode(), re.S).group(1)
    assert flash.startswith(f"Backup {incremental.pk} is being {holder}"), flash
    # The API: 409 in the one error body; the full it is read through is held too.
    api = api_as(roles.OPERATOR)
    refused = api.delete(f"/api/v1/backups/{full.pk}/?with_dependants=true")
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert message.startswith(f"Backup {full.pk} is being booted"), message
    assert f"(through backup {incremental.pk})" in message and f"instant restore {instant.pk} (web01-now)" in message
    assert message.endswith(": end that first.") and "wait for it" not in message  # it may run for days
    # Retention: the chain waits, whole.
    result = prune_policy(policy=booted["policy"], dry_run=False, now=NOW)
    assert result["busy"] == [full.vm_id] and result["deleted"] == [] and result["merged"] == []
    assert BackupPoint.objects.kept().count() == 2

    # Once the instant restore ended (migrated or discarded), its hold released: allowed.
    InstantRestore.objects.filter(pk=instant.pk).update(status=InstantRestore.Status.DISCARDED)
    release_hold(instant.claim)
    response = client.post(f"/backups/{incremental.pk}/delete/", follow=True)
    assert f"Backup {incremental.pk} deleted." in response.content.decode()
    deleted = api.delete(f"/api/v1/backups/{full.pk}/")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": [full.pk]}
    assert not BackupPoint.objects.kept().exists()


def test_it_lets_retention_prune_a_chain_once_the_instant_restore_released_it(booted):
    instant = booted["instant"]
    InstantRestore.objects.filter(pk=instant.pk).update(status=InstantRestore.Status.DONE)
    release_hold(instant.claim)
    result = prune_policy(policy=booted["policy"], dry_run=False, now=NOW)
    assert result["busy"] == [] and result["errors"] == []
    assert list(BackupPoint.objects.kept().values_list("pk", flat=True)) == [booted["incremental"].pk]
