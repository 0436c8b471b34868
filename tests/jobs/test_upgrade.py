"""The upgrade that took the policies and the kind list out of the jobs app keeps every job's policy,
run and exclusivity."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from jobs.models import Job
from policies.models import Policy, PolicyRun


@pytest.mark.django_db(transaction=True)
def test_it_keeps_each_jobs_policy_run_and_exclusivity(settings):
    executor = MigrationExecutor(connection)
    # Every other app as it is now (their tables are), the jobs and policies apps before the upgrade.
    older = {"jobs": "0013_slots", "policies": "0004_ticker_schedule"}
    before = [(app, older.get(app, name)) for app, name in executor.loader.graph.leaf_nodes()]
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
