"""The strategy contract: what every implemented strategy of the registry does, tested once.

Each strategy backs up the same kind of VM (tests/strategies/contract/conftest.py: three disks on
file and block domains, one of them excluded, running) and is held to the same outcomes:

- full, then incremental where the strategy offers it (`incremental`; where it does not, the point
  is a full that says why), each point restored as a new VM whose disks are compared with what the
  guest had written (qemu-img compare);
- the policy's pre/post snapshot commands around the moment captured, and a crash-consistent point
  when the guest cannot be frozen;
- cancel in the middle of the copy; the engine answering 5xx mid-way; the destination filling up mid-
  copy; the VM stopped mid-way; a backup of the VM while it is down (its point cold, not quiesced);
  the worker killed mid-copy, with its record of engine objects kept and with it lost;

and after each: nothing left on the engine but the base the chain keeps (snapshots, checkpoints,
image transfers, VM backups, disks attached elsewhere, activated LVs, readers on hosts), and verify
passes on every point that exists, with no other point directory on the destinations.

The cases run one after the other on one VM and one chain per strategy (a failed attempt must leave
the chain whole: the next case builds on it); a strategy's own behaviour is tested in its own file.
"""

import subprocess
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from django.db import connection

from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from recovery.files import browse
from recovery.files.sessions import close_session, open_session
from repository.models import BackupDestination, BackupPoint
from repository.writer import PointWriter
from strategies.backup import request_backup
from strategies.base import Strategy
from strategies.registry import get_strategy
from tests.helpers import (
    assert_every_point_verifies,
    assert_nothing_left_on_engine,
    backup,
    disks_of,
    kill_worker_mid_transfer,
    processes_of_session,
    processes_using,
    restore,
    run_job_doing_once_data_moves,
    stored_equals,
)
from tests.ovirtsim.helpers import download, identical, wait_for

from .conftest import EXCLUDED, FILE_PATH, FILE_VERSIONS, Guest

# Not inside one test transaction: a job's progress reporter thread writes while its disks move,
# and a killed worker's process shares the database.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MiB = 1024**2


class Contract:
    """One strategy's run of the contract: its VM, destination, chain so far, and the checks made
    after every case."""

    def __init__(self, strategy: str, guest: Guest, destination: BackupDestination, tmp_path: Path):
        self.strategy, self.cls = strategy, get_strategy(strategy)
        self.guest, self.destination, self.tmp_path = guest, destination, tmp_path
        self.vm = VM.objects.get(engine_id=guest.vm_id)
        self.expected: dict[int, dict[str, Path]] = {}  # point pk -> the guest's disks when it was taken

    def request(self, destination=None, **kwargs) -> Job:
        return request_backup(
            vm=self.vm,
            origin="cli",
            destination=destination or self.destination,
            strategy=self.strategy,
            exclude=[self.guest.alias(EXCLUDED)],
            **kwargs,
        )

    def backup(self, destination=None, **kwargs) -> Job:
        job = backup(
            self.vm,
            destination or self.destination,
            strategy=self.strategy,
            exclude=[self.guest.alias(EXCLUDED)],
            **kwargs,
        )
        return job

    def succeeded(self, job: Job, tag) -> BackupPoint:
        """The job's point, holding what the guest had written (its stored chain, compared locally)."""
        assert job.status == Job.Status.SUCCEEDED, job.error
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert point.strategy == self.strategy
        self.expected[point.pk] = expected = self.guest.save(self.tmp_path, tag)
        stored = {e.alias for e in point.manifest().disks}
        assert stored == set(expected) - {self.guest.alias(EXCLUDED)}, stored
        for alias in stored:
            assert stored_equals(point, self.guest.disks[alias.rsplit("_", 1)[1]].id, expected[alias]), alias
        return point

    def base(self) -> set[str]:
        """What the VM's chain keeps on the engine for the next incremental."""
        return set(BackupPoint.objects.filter(vm=self.vm).with_base().values_list("base_id", flat=True))

    def check(self, *, failed: bool = False) -> list[BackupPoint]:
        """After each case: nothing but the chain's base on the engine, every point verified. After a
        run that `failed`, a strategy whose bases the engine removes oldest first only may have left
        one after the kept base (`bases_removed_oldest_first`); the next success removes it."""
        newer = failed and self.cls.bases_removed_oldest_first
        assert_nothing_left_on_engine(
            self.guest.conn, self.guest.sim, self.guest.vm_id, self.base(), newer_checkpoints=newer
        )
        return assert_every_point_verifies(self.vm)

    def restore_and_compare(self, point: BackupPoint, n: int) -> None:
        """The point restored as a new VM: its configuration the source's, each disk read back from
        the engine and compared; the excluded disk is not the new VM's."""
        job = restore(point, f"{self.guest.name}-restored-{n}")
        assert job.status == Job.Status.SUCCEEDED, job.error
        restored_id = job.result["vm_id"]
        conn = self.guest.conn
        try:
            source = self.guest.service.get()
            copy = conn.system_service().vms_service().vm_service(restored_id).get()
            assert (copy.memory, copy.cpu.topology.cores) == (source.memory, source.cpu.topology.cores)
            restored = disks_of(conn, restored_id)
            expected = {a: p for a, p in self.expected[point.pk].items() if a != self.guest.alias(EXCLUDED)}
            assert set(restored) == set(expected)
            for alias, disk in restored.items():
                out = self.tmp_path / f"restored-{n}-{alias}.raw"
                download(conn, self.guest.sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
                assert identical(expected[alias], out), (n, alias)
        finally:
            conn.system_service().vms_service().vm_service(restored_id).remove(detach_only=False)


def after_first_disk(monkeypatch, action) -> None:
    """`action()` once the next backup has stored its first disk, before it reads the second: the
    middle of the backup, for every strategy (each stores its disks through the shared PointWriter)."""
    real = PointWriter.commit_disk
    pending = [action]

    def commit_then_act(self, *args, **kwargs):
        stored = real(self, *args, **kwargs)
        while pending:
            pending.pop()()
        return stored

    monkeypatch.setattr(PointWriter, "commit_disk", commit_then_act)


@pytest.fixture
def contract(strategy, guest, destination, tmp_path, settings) -> Contract:
    if strategy == "disk_attachment":
        proxy_of_this_node(guest.sim, settings)
    if strategy == "export_domain":
        # This node serves the staging share the demo's export domain is on (one per data center),
        # and so do the worker processes the test starts (tests.helpers.worker_env).
        settings.EXPORT_STAGING_DIR = guest.sim.state_dir / "exports"
    return Contract(strategy, guest, destination, tmp_path)


def proxy_of_this_node(sim, settings) -> None:
    """The demo engine's proxy01 runs on this machine: this process is the node inside it, and proxy01
    is marked as its proxy, its device directory the one the simulator publishes for its guest."""
    from django.utils import timezone

    from inventory.models import ProxyVM
    from jobs.models import Node

    proxy01 = VM.objects.get(name="proxy01")
    node, _ = Node.objects.update_or_create(
        name=settings.NODE_NAME,
        defaults={"version": "test", "vm_id": str(proxy01.engine_id), "heartbeat": timezone.now(), "clusters": []},
    )
    ProxyVM.objects.create(vm=proxy01, node=node, device_dir=sim.proxy_device_dirs["proxy01"])


@pytest.fixture
def commands_policy(destination, sshd, tmp_path, guest):
    """A policy with pre/post snapshot commands, run in the guest over SSH (the session's sshd
    stands in for the guest); not covering the VM, so it is named on the backup that uses it."""
    VM.objects.filter(engine_id=guest.vm_id).update(guest_address="127.0.0.1")
    log = tmp_path / "guest.log"
    policy = Policy.objects.create(
        name="with-commands",
        destination=destination,
        guest_ssh_user=sshd["user"],
        guest_ssh_port=sshd["port"],
        guest_ssh_private_key=sshd["key"],
        guest_command_timeout=20,
        pre_snapshot_command=f"echo pre >> {log}; echo tables flushed",
        post_snapshot_command=f"echo post >> {log}",
    )
    return policy, log


# ----- the cases ------------------------------------------------------------------------------


def file_as_it_was(c: Contract, point: BackupPoint, version: bytes) -> None:
    """File-level restore of the point: the guest's file as it was when the point was taken, byte
    for byte, read from the filesystem in the os disk's partition 1; the session leaves nothing."""
    session = open_session(point=point, who="contract", origin="cli")
    try:
        got = browse.download(session, disk=c.guest.alias("os"), path=f"/p1/{FILE_PATH}")
        assert b"".join(got.chunks) == version, (point.pk, point.type)
    finally:
        close_session(session, reason="contract")
    assert not Path(session.workdir).exists()


def full_with_guest_commands(c: Contract, policy: Policy, log: Path) -> BackupPoint:
    """The first backup, a full of every disk but the excluded one, between the policy's commands:
    the guest resumes before its data is copied."""
    job = c.backup(type="full", policy=policy)
    point = c.succeeded(job, "full")
    assert (point.type, point.parent, point.consistency) == ("full", None, "filesystem")
    assert log.read_text().split() == ["pre", "post"]
    messages = list(job.events.order_by("pk").values_list("message", flat=True))
    pre = messages.index("The pre-snapshot command succeeded: tables flushed")
    post = next(i for i, m in enumerate(messages) if m.startswith("Running the post-snapshot command"))
    copied = next(i for i, m in enumerate(messages) if m.startswith(f"Disk {c.guest.alias('os')}"))
    assert pre < post < copied, messages
    assert f"Excluded disks: {c.guest.alias(EXCLUDED)}" in messages
    c.check()
    return point


def incremental_without_guest_agent(c: Contract, full: BackupPoint) -> BackupPoint:
    """After the guest wrote, an incremental is asked for while the guest cannot be frozen: a crash-
    consistent point, said so, and no retries of what cannot heal. A strategy that makes full backups
    only (`incremental = False`) takes a full and says why."""
    c.guest.write("os", 4 * MiB, 0x13, MiB)
    c.guest.write("data", 10 * MiB, 0x22, MiB)
    c.guest.write_file(FILE_VERSIONS[1])
    c.guest.sim.set_guest_agent(c.guest.vm_id, running=False)
    try:
        job = c.backup(type="incremental")
    finally:
        c.guest.sim.set_guest_agent(c.guest.vm_id, running=True)
    point = c.succeeded(job, "incremental")
    assert point.consistency == "crash"
    assert job.events.filter(message__startswith="Quiescing failed").exists()
    assert not job.events.filter(message__contains="answered busy").exists()
    if c.cls.incremental:
        assert (point.type, point.parent) == ("incremental", full), point.note
        assert point.bytes_stored < full.bytes_stored
    else:
        assert (point.type, point.parent) == ("full", None)
        # Then why it is crash-consistent (the point's note says both).
        assert point.note.startswith(
            f"Full backup instead of incremental: the {c.cls.label} strategy makes full backups only. "
            "Crash-consistent, not quiesced:"
        ), point.note
    c.check()
    return point


def cancel_mid_copy(c: Contract, slow_destination) -> None:
    """Cancelled while it copies into a slow share: nothing of it stays, there or on the engine."""
    job = c.request(destination=slow_destination)
    run_job_doing_once_data_moves(job, lambda: Job.objects.get(pk=job.pk).request_cancel())
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED, (job.status, job.error)
    assert job.engine_objects == []
    # What it cancelled on the engine ended: waiting on it is not the engine being busy.
    assert not job.events.filter(message__contains="answered busy").exists()
    assert not processes_using(slow_destination.path)
    c.check(failed=True)


def engine_failing_mid_way(c: Contract, monkeypatch) -> None:
    """The engine answers 503 (Apache's page: the engine restarting) from the middle of a backup
    until it ended: the job fails saying so; what its cleanup could not undo stays recorded, and
    the reaper undoes it once the engine answers again."""
    from jobs.tasks import reap_abandoned_jobs

    fail = lambda: c.guest.sim.set_faults(fail_requests={"rate": 1, "status": 503})  # noqa: E731
    if c.cls.stage_vm is Strategy.stage_vm:
        after_first_disk(monkeypatch, fail)
    else:
        # The whole VM's data comes out in its VM-wide step (an export): mid-way is once the window
        # is open, before that step; after it, only the cleanup needs the engine.
        original = c.cls.open_window
        monkeypatch.setattr(c.cls, "open_window", lambda self, *a, **k: (original(self, *a, **k), fail())[0])
    try:
        job = c.backup()
    finally:
        c.guest.sim.set_faults(fail_requests={})
        monkeypatch.undo()
    assert job.status == Job.Status.FAILED
    assert "error page" in job.error, job.error
    assert c.guest.sim.failed_requests().get(503, 0) >= 1
    reap_abandoned_jobs(timeout_seconds=0)
    job.refresh_from_db()
    assert job.engine_objects == []
    c.check(failed=True)


def destination_full_mid_copy(c: Contract, monkeypatch, tmp_path) -> bool:
    """A destination that fills up in the middle of the copy (the free-space check passed: a thin
    disk's allocation lags): the job says so in words and nothing stored before is touched. False
    when no small filesystem can be mounted here (not root). 18 MiB: room for the writer's headroom,
    not for the VM's data."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=18m", "tmpfs", str(mount)]).returncode != 0:
        return False
    try:
        small = BackupDestination.objects.create(name="small", path=str(mount))
        older = mount / "older-backup"
        older.write_bytes(b"x" * 1024)
        monkeypatch.setattr(Strategy, "space_needed", lambda self, disks, parent: 0)
        job = c.backup(destination=small)
        monkeypatch.undo()
        assert job.status == Job.Status.FAILED, (job.status, job.error)
        assert job.error.startswith(f"The destination filled up: no space was left in {mount}/"), job.error
        assert "older backups are untouched" in job.error
        assert older.read_bytes() == b"x" * 1024
        assert [p.name for p in mount.glob("*")] == ["older-backup"]
        c.check(failed=True)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    return True


def vm_stopped_mid_way(c: Contract, monkeypatch, previous: BackupPoint) -> BackupPoint:
    """The VM is shut down after the first disk was stored: the backup still ends with a point that
    holds what the guest wrote (a strategy whose window closes with the VM starts again as a full,
    and says so)."""
    c.guest.write("os", 20 * MiB, 0x14, MiB)
    after_first_disk(monkeypatch, lambda: (c.guest.service.stop(), c.guest.wait_status(types.VmStatus.DOWN)))
    try:
        job = c.backup()
    finally:
        monkeypatch.undo()
    assert c.guest.status() == types.VmStatus.DOWN
    point = c.succeeded(job, "stopped")
    # Captured while the VM ran (quiesced), unless the backup started again once it was down.
    restarted = point.note.startswith("Full backup, started again")
    assert point.consistency == ("down" if restarted else "filesystem"), (point.consistency, point.note)
    if point.type == "full" and c.cls.incremental:
        assert point.note.startswith("Full backup, started again"), point.note
    else:
        assert (point.type, point.parent) == (
            "incremental" if c.cls.incremental else "full",
            previous if c.cls.incremental else None,
        )
    c.check()
    return point


def backup_of_a_vm_that_is_down(c: Contract, previous: BackupPoint) -> BackupPoint:
    """The VM stays down (its disks held by no qemu): the next backup reads them cold and builds on
    the last point."""
    c.guest.write("os", 28 * MiB, 0x17, MiB)
    point = c.succeeded(c.backup(), "down")
    # Nothing ran in the guest to quiesce: cold, not "Filesystem-consistent (quiesced)".
    assert point.get_consistency_display() == "Cold (powered off)"
    if c.cls.incremental:
        assert (point.type, point.parent) == ("incremental", previous), point.note
    c.check()
    return point


# ----- the contract -------------------------------------------------------------------------


def test_it_keeps_the_contract(contract, commands_policy, slow_destination, monkeypatch, tmp_path):
    c = contract
    full = full_with_guest_commands(c, *commands_policy)
    second = incremental_without_guest_agent(c, full)
    for n, point in enumerate([full, second]):
        c.restore_and_compare(point, n)
        file_as_it_was(c, point, FILE_VERSIONS[n])
    cancel_mid_copy(c, slow_destination)
    engine_failing_mid_way(c, monkeypatch)
    mounted = destination_full_mid_copy(c, monkeypatch, tmp_path)
    stopped = vm_stopped_mid_way(c, monkeypatch, second)
    last = backup_of_a_vm_that_is_down(c, stopped)
    assert [p.pk for p in c.check()] == [full.pk, second.pk, stopped.pk, last.pk]
    skipped = [] if mounted else ["the destination-full case needs a small tmpfs, which only root can mount"]
    if connection.vendor == "sqlite":
        skipped.append("a killed worker needs a database it shares with the test (PostgreSQL)")
    else:
        # The same VM, running again, and the same chain: a worker killed twice mid-copy, with the
        # job's record of engine objects kept, then lost.
        c.guest.service.start()
        c.guest.wait_status(types.VmStatus.UP)
        after = worker_killed_mid_copy(c, slow_destination, last, record="kept")
        worker_killed_mid_copy(c, slow_destination, after, record="lost")
    if skipped:
        pytest.skip("; ".join(skipped) + "; the others passed")


def worker_killed_mid_copy(c: Contract, slow_destination, previous: BackupPoint, *, record: str) -> BackupPoint:
    """A worker killed -9 alone while it copies (the OOM killer's way): nothing it started lives on
    once the reaper ran, which undoes what the job recorded on the engine; had that record been lost,
    the next backup of the VM finds what is ours and removes it. Either way the chain goes on."""
    from jobs.tasks import reap_abandoned_jobs

    job = c.request(destination=slow_destination)
    dead = kill_worker_mid_transfer(job, alone=True)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # nobody knows yet
    assert job.engine_objects, "a job records what it makes on the engine as it makes it"
    if record == "lost":
        job.forget_engine_objects()
    assert reap_abandoned_jobs(timeout_seconds=0) == 1
    job.refresh_from_db()
    # Given up on by the job's own silence, or, when the machine is slow enough that the killed
    # worker's node has not beaten for NODE_LOST_AFTER either, by its node's: the same undoing follows.
    assert job.status == Job.Status.FAILED
    assert "stopped responding" in job.error or f"The node {job.node} running this job was lost" in job.error
    wait_for(lambda: not processes_of_session(dead), what="what the dead worker started to end")
    if record == "kept":
        assert job.engine_objects == []
        c.check(failed=True)
    c.guest.write("os", 24 * MiB, 0x15 if record == "kept" else 0x16, MiB)
    again = c.backup()
    point = c.succeeded(again, "again")
    left = again.events.filter(message__contains="left by an earlier run").exists()
    assert left == (record == "lost"), list(again.events.values_list("message", flat=True))
    if c.cls.incremental:
        assert (point.type, point.parent) == ("incremental", previous), point.note
    assert [p.pk for p in c.check()][-2:] == [previous.pk, point.pk]
    return point
