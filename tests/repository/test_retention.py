"""Retention against real points: consolidation, a prune killed half-way, GFS over months on disk."""

import io
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command

from inventory.models import VM, Disk, Manager
from jobs.models import Job
from jobs.runner import HANDLERS, run_job
from policies.models import Policy
from repository.manifest import ManifestDisk
from repository.models import BackupDestination, BackupPoint
from repository.retention import prune_policy, request_prune
from repository.verify import point_problems
from repository.writer import PointWriter
from tests.helpers import backup, restore_disks, worker_env
from tests.ovirtsim.helpers import download, identical

MiB = 1024**2


def chain(vm, destination, policy, sim, count: int) -> list[BackupPoint]:
    """A full and count-1 incrementals of `vm`, the guest writing between them."""
    points = []
    for i in range(count):
        if i:
            sim.guest_write(str(vm.engine_id), i * MiB, os.urandom(256 * 1024))
        job = backup(vm, destination, policy=policy, type="full" if i == 0 else "incremental")
        assert job.status == Job.Status.SUCCEEDED, job.error
        points.append(BackupPoint.objects.get(pk=job.result["point"]))
    assert [p.type for p in points] == ["full"] + ["incremental"] * (count - 1)
    return points


def as_raw(point: BackupPoint, out: Path) -> Path:
    """What the guest saw at this point, read through its chain as it is now."""
    (entry,) = point.manifest().disks
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", str(point.directory.path / entry.file), str(out)], check=True
    )
    return out


def restored_content(point, sim, out: Path) -> Path:
    job = restore_disks(point, disks=["test01_os"], floating=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    (disk_id,) = job.result["disks"].values()
    with sim.connect() as conn:
        download(conn, sim.ca_file, out, disk_id=disk_id, fmt="raw", out_fmt="raw")
        conn.system_service().disks_service().disk_service(disk_id).remove()
    return out


@pytest.fixture
def policy(destination):
    return Policy.objects.create(name="daily", destination=destination, keep_last=2)


def test_it_merges_an_expired_full_into_the_kept_incremental_and_every_point_reads_the_same(
    manager, destination, demo_sim, policy, tmp_path
):
    vm = VM.objects.get(manager=manager, name="test01")
    full, first, second, third = chain(vm, destination, policy, demo_sim, 4)
    before = {p.pk: as_raw(p, tmp_path / f"{p.pk}.raw") for p in (second, third)}

    out = io.StringIO()
    call_command("prune", "--policy", "daily", "--dry-run", stdout=out)
    assert f"merge  #{full.pk} " in out.getvalue()
    assert f"merged into #{second.pk}: a kept incremental depends on it" in out.getvalue()
    assert f"keep   #{third.pk} " in out.getvalue() and BackupPoint.objects.kept().count() == 4

    job = request_prune(policy=policy, origin="cli")
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert sorted(job.result["merged"]) == [full.pk, first.pk]

    for gone in (full, first):
        assert not gone.directory.path.exists()
        assert not BackupPoint.objects.filter(pk=gone.pk).exists()
    second.refresh_from_db()
    assert (second.type, second.parent, second.manifest().type, second.manifest().parent_backup_id) == (
        "full",
        None,
        "full",
        None,
    )
    (disk,) = second.disks.all()
    assert disk.parent is None and disk.checksum == second.manifest().disks[0].checksum
    for point in (second, third):
        point.refresh_from_db()
        assert point_problems(point) == []
        assert identical(before[point.pk], point.directory.path / point.manifest().disks[0].file)
    assert not list(Path(destination.path, str(vm.engine_id)).glob(".*.merge"))
    assert identical(before[third.pk], restored_content(third, demo_sim, tmp_path / "restored.raw"))


KILL_AFTER = {
    "the merged image is written, before the exchange": "build_full",
    "the exchange, before the rows are updated": "exchange",
    "the rows are updated, before the old full is deleted": "record_full",
}


@pytest.mark.django_db(transaction=True)  # the killed process shares the test's database
@pytest.mark.parametrize("moment", list(KILL_AFTER))
def test_it_leaves_every_point_readable_when_killed_during_a_merge(
    manager, destination, demo_sim, policy, tmp_path, moment
):
    vm = VM.objects.get(manager=manager, name="test01")
    points = chain(vm, destination, policy, demo_sim, 3)
    newest = points[-1]
    expected = as_raw(newest, tmp_path / "newest.raw")
    step = KILL_AFTER[moment]
    script = (
        "import os, signal, django; django.setup()\n"
        "import repository.consolidate as c\n"
        f"real = c.{step}\n"
        "def killed(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"c.{step} = killed\n"
        "from policies.models import Policy\n"
        "from repository.retention import prune_policy\n"
        f"prune_policy(policy=Policy.objects.get(pk={policy.pk}), dry_run=False)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], env=worker_env(), cwd=Path(__file__).resolve().parents[2], capture_output=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    for point in BackupPoint.objects.kept().filter(vm=vm, destination=destination):
        assert point_problems(point) == [], f"after {moment}: backup {point.pk}"
    assert identical(expected, as_raw(newest, tmp_path / "after-kill.raw"))

    # The reaper's undo of the dead job leaves no staging directory and rows that say what the files hold.
    HANDLERS[Job.Kind.RETENTION].on_abandoned(Job(kind=Job.Kind.RETENTION, policy=policy, params={"vm": None}))
    assert not list(Path(destination.path, str(vm.engine_id)).glob(".*.merge"))
    for point in BackupPoint.objects.kept().filter(vm=vm, destination=destination):
        assert point.type == point.manifest().type and point_problems(point) == []

    prune_policy(policy=policy, dry_run=False)  # a restart finishes the merge
    kept = list(BackupPoint.objects.kept().filter(vm=vm, destination=destination).order_by("started"))
    assert [p.pk for p in kept] == [p.pk for p in points[1:]]
    assert kept[0].type == "full" and kept[0].parent is None
    assert all(point_problems(p) == [] for p in kept)
    assert not list(Path(destination.path, str(vm.engine_id)).glob(".*.merge"))
    assert identical(expected, restored_content(newest, demo_sim, tmp_path / "restored.raw"))


# ----- a generated history on disk ---------------------------------------------------------------

DISK_ID = "22222222-2222-2222-2222-222222222222"
NOW = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)


def synthetic_history(vm, destination, policy, days: int, *, chain: int = 7) -> list[BackupPoint]:
    """One point a day for `days` days, a full every `chain`: tiny real QCOW2 files and manifests."""
    disk = Disk.objects.get(engine_id=DISK_ID)
    points, parent = [], None
    for i in range(days):
        if i % chain == 0:
            parent = None
        writer = PointWriter.start(
            vm=vm, destination=destination, strategy="image_transfer", policy=policy, parent=parent, needed_bytes=0
        )
        writer.point.started = NOW - timedelta(days=days - 1 - i, hours=1)
        writer.point.save(update_fields=["started"])
        name = f"{DISK_ID}.qcow2"
        record, backing = writer.parent_file(DISK_ID, name)
        create = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if backing:
            create += ["-b", backing, "-F", "qcow2"]
        subprocess.run([*create, str(writer.part(name)), "4M"], check=True)
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P {i % 250} {(i % 4) * MiB} 64k", str(writer.part(name))],
            check=True,
            capture_output=True,
        )
        entry = ManifestDisk(DISK_ID, "web01_os", "", "qcow2", 4 * MiB, 0, "", parent_file=backing)
        writer.commit_disk(name, entry=entry, inventory_disk=disk, parent=record)
        writer.write_ovf("<ovf/>")
        parent = writer.complete(consistency="crash", bytes_read=64 * 1024)
        points.append(parent)
    return points


def test_it_keeps_gfs_points_over_months_of_history_on_disk(db, tmp_path):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01")
    Disk.objects.create(manager=manager, vm=vm, engine_id=DISK_ID, name="web01_os")
    (tmp_path / "gfs").mkdir()
    destination = BackupDestination.objects.create(name="gfs", path=str(tmp_path / "gfs"))
    policy = Policy.objects.create(
        name="gfs", destination=destination, keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=3
    )
    points = synthetic_history(vm, destination, policy, 100)
    guest = {p.pk: as_raw(p, tmp_path / f"{p.pk}.raw") for p in points}

    result = prune_policy(policy=policy, dry_run=False, now=NOW)

    kept = list(BackupPoint.objects.kept().filter(vm=vm).order_by("-started"))
    assert {d["reason"] for d in result["plan"] if d["point"] == kept[0].pk} == {
        "kept: one of the last 2, daily 2026-11-28, weekly 2026-W48, monthly 2026-11"
    }
    reasons = {d["point"]: d["reason"] for d in result["plan"]}
    assert any(r.startswith("kept: monthly 2026-09") for r in reasons.values())
    assert len(result["deleted"]) == 100 - len(kept) and len(result["merged"]) > 0
    for point in points:
        if not BackupPoint.objects.filter(pk=point.pk).exists():
            assert not point.directory.path.exists()
            continue
        point.refresh_from_db()
        assert point_problems(point) == [], f"backup {point.pk}"
        assert identical(guest[point.pk], as_raw(point, tmp_path / "now.raw")), f"backup {point.pk} changed"


def test_it_refuses_to_merge_a_damaged_full_and_keeps_the_chain(manager, destination, demo_sim, policy):
    from tests.recovery.test_integrity import flip_bytes

    vm = VM.objects.get(manager=manager, name="test01")
    full, first, second = chain(vm, destination, policy, demo_sim, 3)
    (entry,) = full.manifest().disks
    image = full.directory.path / entry.file
    flip_bytes(image)

    job = request_prune(policy=policy, origin="cli")
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        f"1 chain(s) could not be consolidated and are kept as they are (Backup {first.pk} cannot become a full: "
        f"{image} does not match its checksum: expected {entry.checksum}"
    )
    assert sorted(BackupPoint.objects.kept().values_list("pk", flat=True)) == [full.pk, first.pk, second.pk]
    first.refresh_from_db()
    assert first.type == "incremental" and image.exists()
    assert not list(Path(destination.path, str(vm.engine_id)).glob(".*.merge"))
