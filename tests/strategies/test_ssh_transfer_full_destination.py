"""A destination that fills up while the SSH transfer strategy copies a volume into it (another
writer took the room the free-space check had seen): the job fails saying so, over OpenSSH and
over netcat alike, and nothing stored before is touched."""

import contextlib
import subprocess
from pathlib import Path

import pytest

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupDestination
from strategies.backup import request_backup
from tests.helpers import assert_clean_engine, disks_of, kept_snapshots, run_job_doing_once_data_moves
from tests.ovirtsim.helpers import wait_for
from tests.strategies.test_ssh_transfer import readers_on_hosts, ssh_manager  # noqa: F401 (a fixture)

MiB = 1024**2


@pytest.fixture
def small_destination(db, tmp_path):
    """A tmpfs just larger than what bigdata01's full needs (its 1 GiB of data and headroom)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield BackupDestination.objects.create(name="small", path=str(mount))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill_up(directory: Path) -> None:
    """Another writer takes every free byte of the filesystem."""
    chunk = b"\xff" * MiB
    with open(directory / "someone-else", "wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC: full
        while True:
            f.write(chunk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("netcat", [False, True], ids=["openssh", "netcat"])
def test_it_fails_in_words_when_the_destination_fills_up_mid_copy(ssh_manager, small_destination, demo_sim, netcat):  # noqa: F811
    mount = Path(small_destination.path)
    older = mount / "older-backup"
    older.write_bytes(b"x" * 1024)
    vm = VM.objects.get(manager=ssh_manager, name="bigdata01")  # 1 GiB to move: seconds
    job = request_backup(
        vm=vm,
        origin="cli",
        destination=small_destination,
        type="full",
        strategy="ssh_transfer",
        options={"netcat": True} if netcat else None,
    )
    run_job_doing_once_data_moves(job, lambda: fill_up(mount))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED, (job.status, job.error)
    assert job.error.startswith("The destination filled up: writing ") and "older backups are untouched" in job.error
    assert older.read_bytes() == b"x" * 1024
    assert [p.name for p in mount.glob("*/*")] == []  # the point's directory went
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))
        disk = next(iter(disks_of(conn, str(vm.engine_id)).values()))
    wait_for(lambda: not readers_on_hosts(disk.id), what="the sender on the host to end")
