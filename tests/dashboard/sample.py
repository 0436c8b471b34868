"""A small estate with a known answer to every dashboard question, as database rows (no engine)."""

from datetime import datetime, timedelta

from django.contrib.contenttypes.models import ContentType

GIB = 2**30
UUID = "00000000-0000-0000-0000-{:012d}"


def build_sample(tmp_path, now: datetime) -> dict:
    """Five VMs: web01 and web02 backed up 5 h ago (OK), db01 whose last backup failed 5 h ago after
    a good one 20 h ago (failing), old01 whose last good backup is 3 days old and whose job of last
    night was skipped (stale), app01 that no policy covers (uncovered). Policy nightly-prod (daily
    01:00, RPO 26 h) covers all but app01; weekly-archive covers nothing. Destination nas holds
    8.5 GiB of kept backups (one damaged) with 100 GiB free; tape is empty with 50 GiB free. Older
    backup jobs: 2 succeeded and 1 failed 2 days ago, 1 skipped 10 days ago."""
    from inventory.models import VM, Manager
    from jobs.models import Job
    from policies.models import Policy
    from repository.models import BackupDestination, BackupPoint

    manager = Manager.objects.create(name="e", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vms = {
        name: VM.objects.create(manager=manager, engine_id=UUID.format(n), name=name)
        for n, name in enumerate(["web01", "web02", "db01", "old01", "app01"])
    }
    (tmp_path / "nas").mkdir()
    (tmp_path / "tape").mkdir()
    nas = BackupDestination.objects.create(
        name="nas", path=str(tmp_path / "nas"), free_bytes=100 * GIB, capacity_bytes=200 * GIB, checked=now
    )
    tape = BackupDestination.objects.create(name="tape", path=str(tmp_path / "tape"), free_bytes=50 * GIB, checked=now)
    nightly = Policy.objects.create(
        name="nightly-prod", destination=nas, schedule="0 1 * * *", match_name_regex="^(web|db|old)"
    )
    weekly = Policy.objects.create(name="weekly-archive", destination=tape, schedule="0 3 * * 0")
    policy_type = ContentType.objects.get_for_model(Policy)

    def job(vm, status, ago, error="", policy=nightly):
        at = now - ago
        return Job.objects.create(
            kind="backup",
            vm=vm,
            name=vm.name,
            status=status,
            created=at,
            started=at,
            finished=at + timedelta(minutes=10),
            error=error,
            started_by_type=policy_type if policy else None,
            started_by_id=policy.pk if policy else None,
        )

    def point(vm, ago, size, status=BackupPoint.Status.COMPLETE, made_by=None):
        at = now - ago
        return BackupPoint.objects.create(
            vm=vm,
            destination=nas,
            job=made_by,
            policy=nightly,
            strategy="image_transfer",
            status=status,
            started=at,
            finished=at + timedelta(minutes=10),
            bytes_stored=size,
        )

    hours = lambda n: timedelta(hours=n)  # noqa: E731
    point(vms["web01"], hours(5), 2 * GIB, made_by=job(vms["web01"], Job.Status.SUCCEEDED, hours(5)))
    point(vms["web02"], hours(5), GIB, made_by=job(vms["web02"], Job.Status.SUCCEEDED, hours(5)))
    point(vms["db01"], hours(20), 4 * GIB, made_by=job(vms["db01"], Job.Status.SUCCEEDED, hours(20)))
    failed = job(vms["db01"], Job.Status.FAILED, hours(5), error="Snapshot failed: storage domain sd1 is full")
    point(vms["old01"], timedelta(days=3), GIB, made_by=job(vms["old01"], Job.Status.SUCCEEDED, timedelta(days=3)))
    job(vms["old01"], Job.Status.SKIPPED, hours(5), error="Not started by the end of its backup window")
    point(vms["web01"], timedelta(days=10), GIB // 2, status=BackupPoint.Status.DAMAGED)
    # Older history, for the charts.
    job(vms["web01"], Job.Status.SUCCEEDED, timedelta(days=2))
    job(vms["web02"], Job.Status.SUCCEEDED, timedelta(days=2))
    job(vms["db01"], Job.Status.FAILED, timedelta(days=2), error="older failure")
    job(vms["web01"], Job.Status.SKIPPED, timedelta(days=10), error="window")
    # Not backups: never counted in the backup answers.
    Job.objects.create(kind="sync", name="e", status=Job.Status.FAILED, created=now - hours(1), finished=now)
    return {"vms": vms, "nas": nas, "tape": tape, "nightly": nightly, "weekly": weekly, "failed": failed}
