"""Running backup and restore jobs in tests, and what a clean engine looks like afterwards."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from jobs.models import Job
from jobs.runner import run_job
from recovery.restore import request_restore
from repository.models import BackupPoint
from strategies.backup import request_backup
from tests.ovirtsim.helpers import download, identical


def backup(vm, destination, **kwargs) -> Job:
    job = request_backup(vm=vm, destination=destination, **{"origin": "cli", **kwargs})
    run_job(job.pk)
    job.refresh_from_db()
    return job


def restore(point, name, **kwargs) -> Job:
    job = request_restore(point=point, name=name, **{"origin": "cli", **kwargs})
    run_job(job.pk)
    job.refresh_from_db()
    return job


def restore_disks(point, **kwargs) -> Job:
    job = request_restore(point=point, **{"origin": "cli", **kwargs})
    run_job(job.pk)
    job.refresh_from_db()
    return job


def engine_snapshots(conn, vm_id):
    return [
        s
        for s in conn.system_service().vms_service().vm_service(vm_id).snapshots_service().list()
        if s.snapshot_type == types.SnapshotType.REGULAR
    ]


def disks_of(conn, vm_id) -> dict[str, types.Disk]:
    service = conn.system_service().vms_service().vm_service(vm_id)
    return {a.disk.alias: a.disk for a in service.disk_attachments_service().list(follow="disk")}


def reference(conn, sim, vm_id, snapshot_id, tmp_path, tag) -> dict[str, Path]:
    """What the guest saw at the backup: the kept snapshot's disks, read back whole from the engine."""
    service = conn.system_service().vms_service().vm_service(vm_id).snapshots_service().snapshot_service(snapshot_id)
    result = {}
    for disk in service.disks_service().list():
        out = tmp_path / f"ref-{tag}-{disk.alias}.raw"
        download(conn, sim.ca_file, out, snapshot_id=disk.image_id, fmt="raw", out_fmt="raw")
        result[disk.alias] = out
    return result


def stored_equals(point: BackupPoint, disk_id: str, expected: Path) -> bool:
    """The point's image of the disk (with its chain) shows the guest what `expected` holds: its file as
    the manifest names it (QCOW2 for most strategies, RAW for disk attachment)."""
    (entry,) = [d for d in point.manifest().disks if d.disk_id == disk_id]
    return identical(point.directory.path / entry.file, expected)


def reseal_ovf(point: BackupPoint, data: bytes) -> None:
    """A point's vm.ovf replaced, and its checksum recorded in the manifest and on the row as if the
    engine had returned these bytes: the checksums agree, and what follows depends on the content."""
    import blake3

    from repository.manifest import Manifest

    directory = point.directory.path
    (directory / "vm.ovf").write_bytes(data)
    manifest = Manifest.read(directory)
    manifest.ovf_checksum = f"blake3:{blake3.blake3(data).hexdigest()}"
    manifest.write(directory)
    BackupPoint.objects.filter(pk=point.pk).update(ovf_checksum=manifest.ovf_checksum)
    point.refresh_from_db()


def back_up_after_writes(conn, sim, vm, destination, writes, tmp_path, *, run=None, check=None):
    """For each batch of guest writes ((alias, offset, byte value) of 1 MiB each; None for none),
    write them, back the VM up (`run(vm, destination)`, `backup` by default), read back the kept
    snapshot's disks as the reference, and check the point's images against it. `check(job, point)`
    runs after each backup.
    Returns the points and their references."""
    vm_id = str(vm.engine_id)
    disks = disks_of(conn, vm_id)
    points, references = [], []
    for n, batch in enumerate(writes):
        for alias, offset, pattern in batch or []:
            sim.guest_write(disks[alias].id, offset, bytes([pattern]) * 1024**2)
        job = (run or backup)(vm, destination)
        assert job.status == Job.Status.SUCCEEDED, job.error
        point = BackupPoint.objects.get(pk=job.result["point"])
        points.append(point)
        assert_clean_engine(conn, vm_id, {point.base_id})
        references.append(reference(conn, sim, vm_id, point.base_id, tmp_path, n))
        for alias, expected in references[-1].items():
            assert stored_equals(point, disks[alias].id, expected), (n, alias)
        if check is not None:
            check(job, point)
    return points, references


def assert_restored_as(conn, sim, vm_id, expected: dict[str, Path], tmp_path) -> dict[str, types.Disk]:
    """Every disk of a restored VM, read back whole from the engine, holds what `expected` (alias ->
    raw file) holds. Returns its disks by alias."""
    restored = disks_of(conn, vm_id)
    assert set(restored) == set(expected)
    for alias, disk in restored.items():
        out = tmp_path / f"restored-{vm_id}-{alias}.raw"
        download(conn, sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
        assert identical(expected[alias], out), alias
    return restored


def kept_snapshots(vm) -> set[str]:
    return set(BackupPoint.objects.filter(vm=vm).with_base().values_list("base_id", flat=True))


def settled(conn, vm_id) -> bool:
    """No snapshot or disk of the VM is locked (the engine merges a removed snapshot in the background)."""
    snapshots = engine_snapshots(conn, vm_id)
    disks = disks_of(conn, vm_id).values()
    return all(s.snapshot_status == types.SnapshotStatus.OK for s in snapshots) and all(
        d.status != types.DiskStatus.LOCKED for d in disks
    )


def assert_clean_engine(conn, vm_id, keep: set[str]):
    from tests.ovirtsim.helpers import wait_for

    wait_for(lambda: settled(conn, vm_id), what="the engine to finish merging")
    assert {s.id for s in engine_snapshots(conn, vm_id)} == keep
    transfers = conn.system_service().image_transfers_service().list()
    assert all(
        t.phase in (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE)
        for t in transfers
    ), [t.phase for t in transfers]
    assert all(d.status == types.DiskStatus.OK for d in disks_of(conn, vm_id).values())


def processes_using(path: str) -> list[int]:
    """Processes with `path` in their command line (qemu-nbd names its image there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and path.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_until_data_moves(job: Job, *, timeout: float = 120, while_alive=None) -> None:
    """Return once the job has moved bytes (its progress says so)."""
    import time

    deadline = time.monotonic() + timeout
    while Job.objects.get(pk=job.pk).bytes_done == 0:
        assert while_alive is None or while_alive(), "the job ended before it transferred anything"
        assert time.monotonic() < deadline, "no data moved in time"
        time.sleep(0.05)


def run_job_doing_once_data_moves(job: Job, action) -> None:
    """Run the job here while another thread does `action()` once its data moves (cancel, stop the
    engine...)."""
    import threading

    from django.db import connections

    def watch():
        try:
            wait_until_data_moves(job, timeout=60)
            action()
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_job(job.pk)
    watcher.join()


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process sharing the test's database (PostgreSQL only: the
    SQLite test database is not shared across processes the way the service uses it)."""
    import os

    from django.conf import settings
    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("a worker process needs a database it can share with the test (PostgreSQL)")
    db = connection.settings_dict
    return os.environ | {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "BACKUP_ROOTS": ",".join(settings.BACKUP_ROOTS),
        "EXPORT_STAGING_DIR": str(settings.EXPORT_STAGING_DIR),
        "NFS_NETNS": settings.NFS_NETNS,  # the simulator's hosts' storage network, when a test set it
        **extra,
    }


def start_worker(*, stderr=None, **env: str) -> subprocess.Popen:
    """`manage.py worker` in a process group of its own (as systemd runs the service), sharing the
    test's database; `env` adds to its environment (NODE_NAME, WORKERS...). Its output is dropped
    unless `stderr` says where it goes."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "worker"],
        env=worker_env(JOB_HEARTBEAT_TIMEOUT="300") | env,
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
    )


def kill_worker_mid_transfer(job: Job, *, alone: bool = False) -> int:
    """Run the job in a worker process of its own and kill it -9 once bytes move: with what it
    started (as systemd stops a unit), or `alone` (as the OOM killer picks one process). Returns the
    dead worker's pid (what it left behind carries it, as its SSH key directory's name)."""
    import os
    import signal

    worker = subprocess.Popen(
        [sys.executable, "-c", f"import django; django.setup(); from jobs.runner import run_job; run_job({job.pk})"],
        env=worker_env(),
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )
    wait_until_data_moves(job, while_alive=lambda: worker.poll() is None)
    if alone:
        os.kill(worker.pid, signal.SIGKILL)
    else:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    return worker.pid


def start_tampering_proxy(upstream, *, connect=socket.create_connection, at: int = 1024**2):
    """A TCP proxy on 127.0.0.1 for one connection to `upstream` (address, port): it passes the
    first 32 bytes (the netcat token) on, and flips a bit of the byte at offset `at` of what comes
    back, as anyone on an unencrypted path could. Returns its address, its thread, and a list that
    holds `at` once that byte went through flipped."""
    listener = socket.create_server(("127.0.0.1", 0))
    flipped: list[int] = []

    def run() -> None:
        node, _ = listener.accept()
        listener.close()
        with node, connect(upstream) as host:
            host.sendall(node.recv(32, socket.MSG_WAITALL))
            seen = 0
            while chunk := host.recv(65536):
                if seen <= at < seen + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[at - seen] ^= 0x80
                    flipped.append(at)
                node.sendall(chunk)
                seen += len(chunk)

    thread = threading.Thread(target=run)
    thread.start()
    return listener.getsockname(), thread, flipped


class OpenWatch:
    """Counts the opens of one file, by any process, while a `with` block runs (Linux inotify): how
    a test shows a file outside a backup was never read."""

    IN_OPEN = 0x20
    IN_NONBLOCK = 0o4000
    EVENT = 16  # struct inotify_event without a name (a watched file's events carry none)

    def __init__(self, path: Path):
        self.path = path
        self.opens = 0

    def __enter__(self) -> "OpenWatch":
        import ctypes
        import os

        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(self.IN_NONBLOCK)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, os.fsencode(self.path), self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {self.path}")
        return self

    def __exit__(self, *exc) -> None:
        import os

        try:
            while True:
                self.opens += len(os.read(self._fd, 64 * self.EVENT)) // self.EVENT
        except BlockingIOError:
            pass
        finally:
            os.close(self._fd)


# ----- what every strategy leaves behind (the strategy contract, tests/strategies/contract) -----


def readers_on_hosts(disk_id: str) -> list[int]:
    """Processes reading a disk's volumes at vdsm's path on a simulated host (a `cat` started over SSH)."""
    found = []
    for pid in processes_using(disk_id):
        try:
            if b"/rhev/data-center/" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def processes_of_session(sid: int) -> list[int]:
    """Live processes of a session (a worker started with start_new_session leads one; what it
    started stays in it, killed or not)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            # Fields after the command's name (in parentheses, which may hold spaces): state, ppid, pgrp, session.
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if proc.name.isdigit() and fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(proc.name))
    return found


def active_lvs_not_held_by_vm(conn, sim, vm_id: str) -> dict[str, list[str]]:
    """The LVs of the VM's disks (on block domains) active on some host for anyone but the VM's own
    qemu: what a run activated and left. LV -> the hosts' holders."""
    from ovirt.volumes import disk_volumes

    lvm = sim.lvm()
    left = {}
    for disk in disks_of(conn, vm_id).values():
        (sd,) = disk.storage_domains
        if sd.id not in lvm.vgs():
            continue
        for lv in disk_volumes(conn, disk.id):
            holders = [h for host in lvm.active_on(sd.id, lv) for h in lvm.holders(host, sd.id, lv)]
            if set(holders) - {f"vm:{vm_id}"}:
                left[f"{sd.id}/{lv}"] = holders
    return left


def assert_nothing_left_on_engine(conn, sim, vm_id: str, keep: set[str], *, newer_checkpoints: bool = False) -> None:
    """What a backup leaves on the engine, whatever its strategy and however it ended: the base the
    VM's chain keeps (`keep`: a snapshot or a checkpoint id) and nothing else. No other snapshot or
    checkpoint, no image transfer or VM backup open, none of the VM's disks attached to another VM
    (a proxy), locked or illegal, none of its LVs active for anyone but the VM, nothing reading its
    volumes on a host. With `newer_checkpoints`, checkpoints after the kept one are let be: the
    engine removes checkpoints oldest first only, so one a failed run made stays until the next
    backup retires the kept one (see Strategy.bases_removed_oldest_first)."""
    from ovirt.backups import checkpoints
    from tests.ovirtsim.helpers import wait_for

    wait_for(lambda: settled(conn, vm_id), what="the engine to finish merging")
    vm_service = conn.system_service().vms_service().vm_service(vm_id)
    chain = [c.id for c in checkpoints(conn, vm_id)]
    if newer_checkpoints and keep & set(chain):
        chain = chain[: max(chain.index(k) for k in keep & set(chain)) + 1]
    bases = {s.id for s in engine_snapshots(conn, vm_id)} | set(chain)
    assert bases == keep, f"snapshots and checkpoints {sorted(bases)}, expected {sorted(keep)}"
    transfers = conn.system_service().image_transfers_service().list()
    ended = (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE)
    assert [t.phase for t in transfers if t.phase not in ended] == []
    backups = vm_service.backups_service().list()
    assert [b.phase for b in backups if b.phase not in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED)] == []
    disks = disks_of(conn, vm_id)
    assert {a: d.status for a, d in disks.items() if d.status != types.DiskStatus.OK} == {}
    ids = {d.id for d in disks.values()}
    elsewhere = [
        (vm.name, a.disk.id)
        for vm in conn.system_service().vms_service().list()
        if vm.id != vm_id
        for a in conn.system_service().vms_service().vm_service(vm.id).disk_attachments_service().list()
        if a.disk.id in ids
    ]
    assert elsewhere == [], f"disks of the VM attached to other VMs: {elsewhere}"
    # No clone of ours (the export domain strategy's) and nothing of ours in an export domain.
    clones = [vm.name for vm in conn.system_service().vms_service().list(search="name=backup-clone-*")]
    assert clones == [], f"clone VMs left: {clones}"
    sds = conn.system_service().storage_domains_service()
    for sd in sds.list(search="type=export"):
        held = [v.name for v in sds.storage_domain_service(sd.id).vms_service().list()]
        assert [n for n in held if n.startswith("backup-clone-") or n == vm_service.get().name] == [], held
    assert active_lvs_not_held_by_vm(conn, sim, vm_id) == {}
    for disk_id in ids:
        wait_for(lambda disk_id=disk_id: not readers_on_hosts(disk_id), what="readers of the volumes on hosts to end")


def assert_every_point_verifies(vm) -> list[BackupPoint]:
    """A verify job over every kept point of the VM succeeds and finds each sound; every point
    directory on the destinations is one of those (a failed attempt left none). Returns the points."""
    from repository.verify import request_verify

    points = list(BackupPoint.objects.kept().filter(vm=vm).order_by("started"))
    if points:
        job = request_verify(origin="cli", points=points)
        run_job(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error
        sound = job.events.filter(message__endswith="is sound").count()
        assert sound == len(points), list(job.events.values_list("message", flat=True))
    destinations = {p.destination for p in BackupPoint.objects.filter(vm=vm)}
    for destination in destinations:
        # An empty directory is no point (found left on a network share by the reaper, where the dead
        # worker's copy still held a file of it as it was removed: a known gap, see the contract).
        stored = {p.name for p in Path(destination.path).glob("*/*") if p.is_dir() and any(p.iterdir())}
        kept = {str(p.uuid) for p in points if p.destination == destination}
        assert stored == kept, (destination.name, sorted(Path(destination.path).rglob("*")))
    return points


def leave_engine_as_found(conn, vm_id: str) -> None:
    """The demo engine is shared by the tests of a worker: remove what a test's backups kept on a VM
    (our snapshots, its checkpoints, oldest first as the engine requires), so the next test finds the
    VM as seeded."""
    from ovirt.backups import checkpoints, remove_checkpoint
    from ovirt.snapshots import SNAPSHOT_PREFIX, remove_snapshot
    from ovirt.vms import vm_service

    for snapshot in vm_service(conn, vm_id).snapshots_service().list():
        if (snapshot.description or "").startswith(SNAPSHOT_PREFIX):
            remove_snapshot(conn, vm_id, snapshot.id)
    for checkpoint in checkpoints(conn, vm_id):
        remove_checkpoint(conn, vm_id, checkpoint.id)
    assert checkpoints(conn, vm_id) == []
