"""A destination that fills up while a backup copies a disk into it: the job fails saying so,
whatever strategy and copying tool (ssh exits 255, netcat's writer gets ENOSPC, imageio's client
fails its write), and nothing stored before is touched.

The free-space check before a backup goes by the engine's actual size of the disks, which lags
behind a thin disk's growth (and another writer may take the room meanwhile): here the estimate is
made zero, so that a 64 MiB filesystem passes the check and fills up at the same byte every run."""

import subprocess
from pathlib import Path

import pytest

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupDestination
from strategies.base import Strategy
from tests.helpers import assert_clean_engine, backup, disks_of, kept_snapshots, readers_on_hosts
from tests.ovirtsim.helpers import wait_for


@pytest.fixture
def small_destination(db, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield BackupDestination.objects.create(name="small", path=str(mount))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_it_fails_in_words_when_the_destination_fills_up_mid_netcat_copy(
    ssh_manager, small_destination, demo_sim, monkeypatch
):
    """Netcat's writer on a full destination (ENOSPC); every strategy's own copy is in the contract."""
    strategy, options = "ssh_transfer", {"netcat": True}
    monkeypatch.setattr(Strategy, "space_needed", lambda self, disks, parent: 0)
    mount = Path(small_destination.path)
    older = mount / "older-backup"
    older.write_bytes(b"x" * 1024)
    vm = VM.objects.get(manager=ssh_manager, name="bigdata01")  # 1 GiB of data for 64 MiB of room
    job = backup(vm, small_destination, type="full", strategy=strategy, options=options)
    assert job.status == Job.Status.FAILED, (job.status, job.error)
    assert job.error.startswith(f"The destination filled up: no space was left in {mount}/"), job.error
    assert "older backups are untouched" in job.error
    assert older.read_bytes() == b"x" * 1024
    assert [p.name for p in mount.glob("*")] == ["older-backup"]  # the point's directory went, and the VM's
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))
        disk = next(iter(disks_of(conn, str(vm.engine_id)).values()))
    wait_for(lambda: not readers_on_hosts(disk.id), what="the sender on the host to end")
