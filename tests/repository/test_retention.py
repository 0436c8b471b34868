"""Retention against real points: consolidation, a prune killed half-way, GFS over months on disk."""

import io
import os
import shutil
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
from repository.verify import point_problems, request_verify
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


def chain_step(vm, destination, policy, sim) -> BackupPoint:
    """One more incremental of `vm`, the guest writing before it."""
    sim.guest_write(str(vm.engine_id), 5 * MiB, os.urandom(256 * 1024))
    job = backup(vm, destination, policy=policy, type="incremental")
    assert job.status == Job.Status.SUCCEEDED, job.error
    return BackupPoint.objects.get(pk=job.result["point"])


def as_raw(point: BackupPoint, out: Path) -> Path:
    """What the guest saw at this point, read through its chain as it is now."""
    (entry,) = point.manifest().disks
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "raw", str(point.directory.path / entry.file), str(out)], check=True
    )
    return out


def staging_left(destination, vm) -> list[Path]:
    """What a merge stages beside or inside the points of a VM (none once it is over)."""
    vm_dir = Path(destination.path, str(vm.engine_id))
    return [*vm_dir.glob(".*.merge"), *vm_dir.glob("*/.merge"), *vm_dir.glob("*/.*.part")]


def restored_content(point, sim, out: Path) -> Path:
    job = restore_disks(point, disks=["test01_os"], floating=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    (disk_id,) = job.result["disks"].values()
    with sim.connect() as conn:
        download(conn, sim.ca_file, out, disk_id=disk_id, fmt="raw", out_fmt="raw")
        conn.system_service().disks_service().disk_service(disk_id).remove()
    return out


@pytest.fixture(params=["local", "nas"])
def repo(request):
    """The destination: a local directory, or a network share with no rename exchange (sshfs)."""
    return request.getfixturevalue("destination" if request.param == "local" else "nas_destination")


@pytest.fixture
def policy(repo):
    return Policy.objects.create(name="daily", destination=repo, keep_last=2)


def test_it_merges_an_expired_full_into_the_kept_incremental_and_every_point_reads_the_same(
    manager, repo, demo_sim, policy, tmp_path
):
    destination = repo
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
    assert not staging_left(destination, vm)
    verify = request_verify(origin="cli", points=[second, third])
    run_job(verify.pk)
    verify.refresh_from_db()
    assert verify.status == Job.Status.SUCCEEDED, verify.error
    assert identical(before[third.pk], restored_content(third, demo_sim, tmp_path / "restored.raw"))


KILL_AFTER = {
    "the merged image is written and recorded, before the manifest names it": "record_merged",
    "the manifest names the merged image, before it replaces the layer": "name_merged",
    "the merged image replaced the layer, before the manifest says full": "replace_images",
    "the manifest says full, before the rows are updated": "write_full_manifest",
    "the rows are updated, before the old full is deleted": "record_full",
}


# On the network share, the moments around its switch: the manifest naming the merged image, then
# the image renamed over the layer (the other moments are the same on both).
MOMENTS = [
    pytest.param(moment, where, id=f"{where}-{step}")
    for moment, step in KILL_AFTER.items()
    for where in ("local", "nas")
    if where == "local" or step in ("name_merged", "replace_images")
]


@pytest.mark.django_db(transaction=True)  # the killed process shares the test's database
@pytest.mark.parametrize(("moment", "repo"), MOMENTS, indirect=["repo"])
def test_it_leaves_every_point_readable_when_killed_during_a_merge(manager, repo, demo_sim, policy, tmp_path, moment):
    destination = repo
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
    HANDLERS["retention"].on_abandoned(Job(kind="retention", started_by=policy, params={"vm": None}))
    assert not staging_left(destination, vm)
    for point in BackupPoint.objects.kept().filter(vm=vm, destination=destination):
        assert point.type == point.manifest().type and point_problems(point) == []

    prune_policy(policy=policy, dry_run=False)  # a restart finishes the merge
    kept = list(BackupPoint.objects.kept().filter(vm=vm, destination=destination).order_by("started"))
    assert [p.pk for p in kept] == [p.pk for p in points[1:]]
    assert kept[0].type == "full" and kept[0].parent is None
    assert all(point_problems(p) == [] for p in kept)
    assert not staging_left(destination, vm)
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


def test_it_removes_what_a_killed_merge_staged_before_the_next_backup(db, tmp_path):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01")
    Disk.objects.create(manager=manager, vm=vm, engine_id=DISK_ID, name="web01_os")
    (tmp_path / "repo").mkdir()
    destination = BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    policy = Policy.objects.create(name="p", destination=destination, keep_last=1)
    full, incremental = synthetic_history(vm, destination, policy, 2)
    # What a merge killed while writing leaves: a staged image nothing names yet.
    stage = incremental.directory.path / ".merge"
    stage.mkdir()
    (stage / f"{DISK_ID}.qcow2").write_bytes(os.urandom(MiB))
    legacy = incremental.directory.path.with_name(f".{incremental.uuid}.merge")  # before the share-safe merge
    legacy.mkdir()
    (legacy / f"{DISK_ID}.qcow2").write_bytes(os.urandom(MiB))

    writer = PointWriter.start(vm=vm, destination=destination, strategy="image_transfer", needed_bytes=0)
    writer.abandon()

    assert not staging_left(destination, vm)
    assert point_problems(full) == [] and point_problems(incremental) == []


def test_it_finishes_a_merge_a_killed_prune_left_only_once_no_reader_holds_its_chain(db, tmp_path):
    """A merge killed past its switch is finished by the next backup or prune, which rename files of
    the chain: never while a restore or verify (here, on another node) reads through it."""
    from repository.claims import chain_of, claim_points
    from repository.consolidate import build_full, name_merged, record_merged, staging_dir

    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01")
    Disk.objects.create(manager=manager, vm=vm, engine_id=DISK_ID, name="web01_os")
    (tmp_path / "repo").mkdir()
    destination = BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    policy = Policy.objects.create(name="p", destination=destination, keep_last=2)
    full, middle, newest = synthetic_history(vm, destination, policy, 3)
    manifest = build_full(middle)  # what a prune killed right after its switch leaves
    record_merged(middle, manifest)
    name_merged(middle, manifest)
    layer = middle.directory.path / f"{DISK_ID}.qcow2"
    before = layer.stat().st_ino
    reader = Job.objects.create(kind="restore", name="restore")
    reader.start(node="elsewhere")

    with claim_points(chain_of(newest), mode="read", doing="read", job=reader):
        writer = PointWriter.start(vm=vm, destination=destination, strategy="image_transfer", needed_bytes=0)
        writer.abandon()
        result = prune_policy(policy=policy, dry_run=False)
        # Nothing of the chain renamed under the reader: the layer is the same file, its merge staged.
        assert layer.stat().st_ino == before
        assert staging_dir(middle).exists()
        assert (result["deleted"], result["merged"], result["busy"]) == ([], [], [vm.pk])

    prune_policy(policy=policy, dry_run=False)
    middle.refresh_from_db()
    assert layer.stat().st_ino != before and not staging_left(destination, vm)
    assert middle.type == "full" and point_problems(middle) == [] and point_problems(newest) == []


@pytest.mark.parametrize("repo", ["local"], indirect=True)
def test_it_refuses_to_merge_a_damaged_full_and_keeps_the_chain(manager, repo, demo_sim, policy):
    destination = repo
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
    assert not staging_left(destination, vm)


# ----- a destination that fills up ---------------------------------------------------------------


@pytest.fixture
def small_destination(db, tmp_path):
    """A destination on a filesystem of its own, small enough to fill (a tmpfs)."""
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(path)], check=True)
    yield BackupDestination.objects.create(name="small", path=str(path))
    subprocess.run(["umount", str(path)], check=True)


def test_it_gives_the_room_back_when_a_merge_fills_the_destination(manager, small_destination, demo_sim, tmp_path):
    destination = small_destination
    policy = Policy.objects.create(name="daily", destination=destination, keep_last=2)
    vm = VM.objects.get(manager=manager, name="test01")
    full, first, second = chain(vm, destination, policy, demo_sim, 3)
    expected = as_raw(second, tmp_path / "second.raw")
    # No room for the merged image of the chain.
    filler = Path(destination.path, "filler")
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(destination.path).free - full.bytes_stored // 2)
    free = shutil.disk_usage(destination.path).free

    job = request_prune(policy=policy, origin="cli")
    run_job(job.pk)
    job.refresh_from_db()

    assert not staging_left(destination, vm)
    assert shutil.disk_usage(destination.path).free == free
    assert job.status == Job.Status.FAILED
    assert f"Backup {first.pk} cannot become a full: the destination filled up while its chain was merged" in job.error
    assert "free space on the destination and prune again" in job.error
    assert sorted(BackupPoint.objects.kept().values_list("pk", flat=True)) == [full.pk, first.pk, second.pk]
    assert all(point_problems(p) == [] for p in (full, first, second))

    filler.unlink()  # the administrator frees space: the next backup and prune work
    third = chain_step(vm, destination, policy, demo_sim)
    job = request_prune(policy=policy, origin="cli")
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    kept = list(BackupPoint.objects.kept().filter(vm=vm).order_by("started"))
    assert [p.pk for p in kept] == [second.pk, third.pk] and kept[0].type == "full"
    assert all(point_problems(p) == [] for p in kept) and not staging_left(destination, vm)
    assert identical(expected, as_raw(kept[0], tmp_path / "after.raw"))


def test_it_keeps_a_point_an_instant_restore_runs_from_and_says_so(db, tmp_path, settings):
    """A VM running from a backup (instant restore) pins the point and its chain: retention neither
    deletes nor merges them while it runs, and says why; once the instant restore ends they go."""
    from recovery.instant.workflow import release_hold, request_instant_restore

    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01")
    Disk.objects.create(manager=manager, vm=vm, engine_id=DISK_ID, name="web01_os")
    (tmp_path / "repo").mkdir()
    destination = BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    policy = Policy.objects.create(name="p", destination=destination, keep_last=1)
    full, newest = synthetic_history(vm, destination, policy, 2, chain=1)  # two fulls: the older one goes
    instant, _ = request_instant_restore(point=full, name="web01-instant", cluster="Production", origin="cli")
    pruning = Job.objects.create(kind="retention", name="retention")
    result = prune_policy(policy=policy, dry_run=False, job=pruning)
    assert (result["deleted"], result["busy"]) == ([], [vm.pk])
    full.refresh_from_db()
    assert full.status == BackupPoint.Status.COMPLETE and full.directory.path.is_dir()
    said = list(pruning.events.values_list("message", flat=True))
    assert said == [
        f"Backup {full.pk} is being booted by instant restore {instant.pk} (web01-instant): its chain is left as it is "
        "until the next prune."
    ]
    release_hold(instant.claim)
    assert prune_policy(policy=policy, dry_run=False)["deleted"] == [full.pk]
