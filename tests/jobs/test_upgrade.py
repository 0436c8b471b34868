"""The upgrade that took the policies and the kind list out of the jobs app keeps every job's policy,
run and exclusivity."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from jobs.models import Job
from policies.models import Policy, PolicyRun


@pytest.fixture
def migrated_back_at_the_end(transactional_db):
    """Whatever happens in the test, the database ends at the newest migrations: the next tests of
    this worker share it."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_it_keeps_each_jobs_policy_run_and_exclusivity(settings, migrated_back_at_the_end):
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    # Each app at its newest migration that needs nothing of the upgrade (the upgrade and what came
    # after it undone, in every app): the tables as they were just before it.
    upgrade = [("jobs", "0014_generic_kinds_started_by_group"), ("policies", "0005_run_job_group")]
    later = {node for first in upgrade for node in graph.backwards_plan(first)}
    before = []
    for node in graph.leaf_nodes():
        while node is not None and node in later:
            node = next((p.key for p in graph.node_map[node].parents if p.key[0] == node[0]), None)
        if node is not None:
            before.append(node)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    manager = old.get_model("inventory", "Manager").objects.create(
        name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal"
    )
    vm = old.get_model("inventory", "VM").objects.create(
        manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01"
    )
    destination = old.get_model("repository", "BackupDestination").objects.create(
        name="d", path=settings.BACKUP_ROOTS[0], real_path=settings.BACKUP_ROOTS[0]
    )
    policy = old.get_model("policies", "Policy").objects.create(name="nightly", destination=destination)
    run = old.get_model("policies", "PolicyRun").objects.create(policy=policy, number=1, due=policy.created)
    OldJob = old.get_model("jobs", "Job")
    backup = OldJob.objects.create(kind="backup", vm=vm, manager=manager, policy=policy, run=run, name="web01")
    prune = OldJob.objects.create(kind="retention", policy=policy, run=run, status="succeeded", name="nightly")
    sync = OldJob.objects.create(kind="sync", manager=manager, status="running", name="m")
    alone = OldJob.objects.create(kind="verify", name="every backup")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    run = PolicyRun.objects.get()
    nightly = Policy.objects.get()
    assert [(j.pk, j.started_by, j.group, j.exclusive) for j in Job.objects.order_by("pk")] == [
        (backup.pk, nightly, run.job_group, f"backup:vm:{vm.pk}"),
        (prune.pk, nightly, run.job_group, ""),  # ended: it holds no key
        (sync.pk, None, None, f"sync:manager:{manager.pk}"),
        (alone.pk, None, None, ""),
    ]
    assert list(run.jobs.order_by("pk").values_list("pk", flat=True)) == [backup.pk, prune.pk]
    # The keys keep apart what the two old constraints did.
    for kind, key in (("backup", f"backup:vm:{vm.pk}"), ("sync", f"sync:manager:{manager.pk}")):
        with pytest.raises(IntegrityError), transaction.atomic():
            Job.objects.create(kind=kind, exclusive=key)
