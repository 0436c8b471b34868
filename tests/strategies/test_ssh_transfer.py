"""Backups and restores with the SSH transfer strategy, end to end against ovirtsim's sshd hosts.

The hosts are real sshds (one per host, on 127.0.1.N) that see the file domains' volumes where
vdsm mounts them; the product logs in with a key the simulator authorized, as an administrator
installs the site's key. Block domains are real LVM (an LV per volume, active per host): the
tests check that a run activates what it reads and deactivates only what it activated.
"""

import json
import os
import socket
import subprocess
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from inventory.models import VM, Host
from jobs.models import Job
from ovirt.snapshots import remove_snapshot
from ovirt.vms import remove_vm
from repository.models import BackupPoint
from strategies.backup import request_backup
from tests.helpers import (
    assert_clean_engine,
    assert_restored_as,
    back_up_after_writes,
    backup,
    disks_of,
    kept_snapshots,
    reference,
    restore,
    run_job_doing_once_data_moves,
    start_tampering_proxy,
    stored_equals,
)

MiB = 1024**2


def ssh_backup(vm, destination, **kwargs) -> Job:
    return backup(vm, destination, strategy="ssh_transfer", **kwargs)


@pytest.mark.slow
def test_it_restores_its_points_over_ssh_or_through_imageio(ssh_manager, destination, demo_sim, tmp_path):
    """An incremental reads and stores only the layer since the kept snapshot; its points restore over
    SSH, and the shared imageio path stays available. (What every strategy does is in the contract.)"""
    vm = VM.objects.get(manager=ssh_manager, name="web01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        writes = [None, [("web01_data", 20 * MiB, 0x59), ("web01_data", 4 * MiB + 512 * 1024, 0x5A)]]
        points, references = back_up_after_writes(conn, demo_sim, vm, destination, writes, tmp_path, run=ssh_backup)

        assert [p.type for p in points] == ["full", "incremental"]
        assert points[1].bytes_stored < 4 * MiB < points[0].bytes_stored
        assert points[1].bytes_transferred < 4 * MiB

        # Points of the SSH transfer restore over SSH; the shared imageio path stays available.
        for n, point in enumerate(points):
            transfer = "imageio" if n == 1 else "auto"
            job = restore(point, f"web01-ssh-restored-{n}", transfer=transfer)
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert job.params["transfer"] == ("imageio" if n == 1 else "ssh")
            assert job.events.filter(message__contains="written into volume").count() == (0 if n == 1 else 2)
            restored_id = job.result["vm_id"]
            assert_restored_as(conn, demo_sim, restored_id, references[n], tmp_path)
            conn.system_service().vms_service().vm_service(restored_id).remove()
        remove_snapshot(conn, vm_id, points[1].base_id)


def test_it_stores_a_sparse_8_gib_disk_without_its_zeros(ssh_manager, destination, demo_sim, tmp_path, monkeypatch):
    from repository.writer import PointWriter

    def no_pass_after_the_copy(self, part):
        raise AssertionError(f"{part} was hashed again after its copy")

    monkeypatch.setattr(PointWriter, "hash_soon", no_pass_after_the_copy)
    vm = VM.objects.get(manager=ssh_manager, name="bigdata01")
    job = ssh_backup(vm, destination, type="full")
    assert job.status == Job.Status.SUCCEEDED, job.error
    point = BackupPoint.objects.get(pk=job.result["point"])
    assert 1024 * MiB <= point.bytes_transferred < 1100 * MiB
    assert point.bytes_stored < 1100 * MiB
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), {point.base_id})
        ref = reference(conn, demo_sim, str(vm.engine_id), point.base_id, tmp_path, "big")
        (alias, expected), *_ = ref.items()
        disk = disks_of(conn, str(vm.engine_id))[alias]
        assert stored_equals(point, disk.id, expected)
        remove_snapshot(conn, str(vm.engine_id), point.base_id)
    # Checksummed as it landed (hash_soon was never called): the file verifies against it.
    from repository.verify import chain_problem

    assert point.manifest().disks[0].checksum.startswith("blake3:")
    assert chain_problem(point, disk.id) == ""


def host_of(demo_sim, name: str) -> dict:
    return next(h for h in demo_sim.hosts() if h["name"] == name)


@pytest.mark.parametrize(
    ("fault", "error", "snapshot_taken"),
    [
        ("sshd_down", "the connection was refused (is sshd running on the host?)", False),
        ("refuse_keys", "the key was refused", False),
        ("change_host_key", "changed: it is not the key stored for the host", False),
        ("hide_image", "is missing on host host3", True),
        ("hide_image netcat", "is missing on host host3", True),
    ],
)
def test_it_fails_in_words_and_leaves_nothing_behind_on_each_host_fault(
    ssh_manager, destination, demo_sim, fault, error, snapshot_taken
):
    """test01 is down: its volumes are read on the up host of its cluster, host3."""
    fault, _, mode = fault.partition(" ")
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["test01_os"]
        # The key the first login would learn, pinned (the change_host_key fault changes it afterwards).
        Host.objects.filter(manager=ssh_manager, name="host3").update(
            ssh_host_key=host_of(demo_sim, "host3")["host_key"]
        )
        switch = {"hide_image": disk.id} if fault == "hide_image" else {fault: True}
        demo_sim.set_host_faults("host3", **switch)
        try:
            job = ssh_backup(vm, destination, type="full", options={"netcat": True} if mode else None)
        finally:
            undo = {
                "sshd_down": {"sshd_down": False},
                "refuse_keys": {"refuse_keys": False},
                "hide_image": {"show_image": disk.id},
                "change_host_key": {},
            }[fault]
            if undo:
                demo_sim.set_host_faults("host3", **undo)
        assert job.status == Job.Status.FAILED
        assert error in job.error, job.error
        assert "host3" in job.error or "127.0.1." in job.error
        assert job.events.filter(message__startswith="Snapshot").exists() == snapshot_taken
        assert_clean_engine(conn, vm_id, kept_snapshots(vm))
        assert job.engine_objects == []
    assert [p.name for p in Path(destination.path).glob("*")] == []
    assert not list(Path("/tmp").glob(f"ovirt-backup-ssh-{os.getpid()}-*")), "the key files are removed"


@pytest.mark.parametrize("netcat", [False, True])
def test_it_stores_nothing_when_the_hosts_volume_chain_is_not_the_engines(ssh_manager, destination, demo_sim, netcat):
    """The volume file on the host is backed by a volume the engine does not name as its parent
    (a chain changed behind the engine's back): found in the copy's header, and nothing is kept."""
    from tests.ovirtsim.helpers import qemu_img

    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["test01_os"]
    volumes = [
        p for p in (demo_sim.state_dir / "storage").glob(f"*/images/{disk.id}/*") if p.suffix not in (".meta", ".lease")
    ]
    (volume,) = [
        p for p in volumes if "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(p)).stdout)
    ]
    # A volume the engine does not list, there for qemu to open (so that the snapshot still merges).
    stranger = volume.with_name("0badc0de-0000-4000-8000-000000000000")
    size = str(disk.provisioned_size)
    assert qemu_img("create", "-q", "-f", "qcow2", str(stranger), size).returncode == 0
    assert qemu_img("rebase", "-u", "-f", "qcow2", "-b", stranger.name, "-F", "qcow2", str(volume)).returncode == 0
    try:
        job = ssh_backup(vm, destination, type="full", options={"netcat": True} if netcat else None)
    finally:
        assert qemu_img("rebase", "-u", "-f", "qcow2", "-b", "", str(volume)).returncode == 0
        stranger.unlink()
    assert job.status == Job.Status.FAILED
    assert f"is backed by {stranger.name}, but the engine says its parent is none" in job.error, job.error
    assert "host3" in job.error
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, vm_id, kept_snapshots(vm))
    assert job.engine_objects == []
    assert [p.name for p in Path(destination.path).glob("*")] == []


def test_it_stores_nothing_when_netcat_bytes_change_on_the_way(ssh_manager, destination, demo_sim, monkeypatch):
    """A byte flipped between the host's sender and this node (netcat traffic is neither encrypted nor
    authenticated): the SHA-256s of the two ends differ, and the user reads that, not a stored point."""
    from hosts import session as transport

    connect = socket.create_connection
    proxies = []

    def through_a_tampering_proxy(address, timeout=None):
        # A byte of data past the header (at 1 MiB): no check but the hashes would see it.
        proxy_address, thread, flipped = start_tampering_proxy(address, connect=connect)
        proxies.append((thread, flipped))
        return connect(proxy_address, timeout=timeout)

    monkeypatch.setattr(transport.socket, "create_connection", through_a_tampering_proxy)
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    job = ssh_backup(vm, destination, type="full", options={"netcat": True})
    monkeypatch.undo()
    for thread, _ in proxies:
        thread.join(30)
    assert [flipped for _, flipped in proxies] == [[MiB]]
    assert job.status == Job.Status.FAILED
    assert "arrived damaged over netcat: its SHA-256 differs from what the host sent" in job.error, job.error
    assert "127.0.1." in job.error or "host3" in job.error
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), kept_snapshots(vm))
    assert job.engine_objects == []
    assert [p.name for p in Path(destination.path).glob("*")] == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("sshd_down", "the connection was refused (is sshd running on the host?)"),
        ("refuse_keys", "the key was refused"),
    ],
)
def test_it_fails_a_restore_over_ssh_in_words_and_leaves_no_vm_on_a_host_fault(
    ssh_manager, destination, demo_sim, fault, error
):
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    backup_job = ssh_backup(vm, destination, type="full")
    assert backup_job.status == Job.Status.SUCCEEDED, backup_job.error
    point = BackupPoint.objects.get(pk=backup_job.result["point"])
    name = f"ssh-restore-{fault.replace('_', '-')}"
    with demo_sim.connect() as conn:
        disks_before = {d.id for d in conn.system_service().disks_service().list()}
    demo_sim.set_host_faults("host3", **{fault: True})
    try:
        job = restore(point, name, transfer="ssh")
    finally:
        demo_sim.set_host_faults("host3", **{fault: False})
    assert job.status == Job.Status.FAILED
    assert error in job.error and ("host3" in job.error or "127.0.1." in job.error), job.error
    assert job.engine_objects == []
    with demo_sim.connect() as conn:
        assert conn.system_service().vms_service().list(search=f"name={name}") == []
        # None made, or all removed (earlier tests' disks may still be going away meanwhile).
        assert {d.id for d in conn.system_service().disks_service().list()} - disks_before == set()
        remove_snapshot(conn, vm_id, point.base_id)


def cancelled_once_data_moves(vm, destination) -> Job:
    """A full SSH backup of `vm`, cancelled as soon as its bytes move; asserted cancelled."""
    job = request_backup(vm=vm, origin="cli", destination=destination, type="full", strategy="ssh_transfer")
    run_job_doing_once_data_moves(job, lambda: Job.objects.get(pk=job.pk).request_cancel())
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED, (job.status, job.error)
    return job


def test_it_moves_the_volumes_through_netcat_when_asked(ssh_manager, destination, demo_sim, tmp_path):
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["test01_os"]
        points = []
        for n in range(2):
            if n:
                demo_sim.guest_write(disk.id, 3 * MiB, b"\x6e" * MiB)
            job = ssh_backup(vm, destination, options={"netcat": True})
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert job.events.filter(message__contains="netcat traffic is not encrypted").exists()
            point = BackupPoint.objects.get(pk=job.result["point"])
            points.append(point)
            assert_clean_engine(conn, vm_id, {point.base_id})
            expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, n)["test01_os"]
            assert stored_equals(point, disk.id, expected)
        assert [p.type for p in points] == ["full", "incremental"]
        # The full's file is what netcat brought: its end-to-end SHA-256 is its checksum, and it verifies.
        from repository.verify import chain_problem

        assert points[0].manifest().disks[0].checksum.startswith("sha256:")
        assert chain_problem(points[1], disk.id) == ""
        remove_snapshot(conn, vm_id, points[1].base_id)
    with pytest.raises(ValueError, match="Option netcat is the SSH transfer strategy.s .ssh_transfer.,"):
        request_backup(
            vm=vm, origin="cli", destination=destination, strategy="image_transfer", options={"netcat": True}
        )


def test_it_says_on_the_pages_what_netcat_and_a_restore_over_ssh_mean(ssh_manager, destination, client, users):
    from django.urls import reverse

    vm = VM.objects.get(manager=ssh_manager, name="test01")
    client.force_login(users["operator"])
    page = client.get(reverse("vm-backup", args=[vm.pk])).content.decode()
    assert "SSH transfer" in page and "netcat traffic is not encrypted" in page
    point = BackupPoint.objects.create(vm=vm, destination=destination, strategy="ssh_transfer", status="complete")
    page = client.get(reverse("point-restore", args=[point.pk])).content.decode()
    assert "Disks are written over SSH into the new volumes on host host3" in page
    BackupPoint.objects.filter(pk=point.pk).update(strategy="image_transfer")
    page = client.get(reverse("point-restore", args=[point.pk])).content.decode()
    assert "Disks are written through the engine&#x27;s image transfers (imageio)" in page


def test_it_backs_up_and_restores_through_a_host_that_takes_a_password_only(
    ssh_manager, destination, demo_sim, tmp_path
):
    """host3 refuses every key and logs root in with its password, as an oVirt host the engine added
    with root's password: test01's volumes are read there over OpenSSH, and its point written back
    there, with that password. A wrong one fails in words before anything is made on the engine."""
    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    host3 = Host.objects.filter(manager=ssh_manager, name="host3")
    demo_sim.set_host_password("host3", "root-of-host3")
    demo_sim.set_host_faults("host3", refuse_keys=True)
    try:
        with demo_sim.connect() as conn:
            # Its host key pinned, so OpenSSH itself meets the wrong password (not the first login's paramiko).
            host3.update(ssh_password="not-the-password", ssh_host_key=host_of(demo_sim, "host3")["host_key"])
            job = ssh_backup(vm, destination, type="full")
            assert job.status == Job.Status.FAILED
            assert "the password was refused" in job.error and "127.0.1." in job.error, job.error
            assert_clean_engine(conn, vm_id, kept_snapshots(vm))

            host3.update(ssh_password="root-of-host3")
            job = ssh_backup(vm, destination, type="full")
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert job.events.filter(message__startswith="Reading volumes on host host3").exists()
            point = BackupPoint.objects.get(pk=job.result["point"])
            expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, "password")
            restored = restore(point, "restored-through-a-password", transfer="ssh")
            assert restored.status == Job.Status.SUCCEEDED, restored.error
            assert restored.events.filter(message__startswith="Writing the restored disks on host host3").exists()
            assert_restored_as(conn, demo_sim, restored.result["vm_id"], expected, tmp_path)
            remove_vm(conn, restored.result["vm_id"])  # gone before the next test syncs the inventory
            remove_snapshot(conn, vm_id, point.base_id)
    finally:
        demo_sim.set_host_faults("host3", refuse_keys=False)
        demo_sim.set_host_password("host3", None)


def test_it_merges_a_chain_of_several_volumes_into_one_full_image(ssh_manager, destination, demo_sim, tmp_path):
    """A VM with a snapshot of its own (not ours): the full reads every volume up to our snapshot and
    merges them here into one standalone QCOW2."""
    import ovirtsdk4.types as types

    from tests.ovirtsim.helpers import wait_for

    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["test01_os"]
        demo_sim.guest_write(disk.id, 1 * MiB, b"\x31" * MiB)
        snapshots = conn.system_service().vms_service().vm_service(vm_id).snapshots_service()
        user_snapshot = snapshots.add(types.Snapshot(description="before the upgrade", persist_memorystate=False))
        wait_for(
            lambda: snapshots.snapshot_service(user_snapshot.id).get().snapshot_status == types.SnapshotStatus.OK,
            what="the user's snapshot",
        )
        demo_sim.guest_write(disk.id, 2 * MiB, b"\x32" * MiB)
        job = ssh_backup(vm, destination, type="full")
        assert job.status == Job.Status.SUCCEEDED, job.error
        assert job.events.filter(message__contains="2 volume(s) read").exists()
        point = BackupPoint.objects.get(pk=job.result["point"])
        stored = point.directory.path / f"{disk.id}.qcow2"
        info = subprocess.run(["qemu-img", "info", str(stored)], capture_output=True, text=True, check=True)
        assert "backing file" not in info.stdout, "a full is a standalone image"
        expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, "chain")["test01_os"]
        assert stored_equals(point, disk.id, expected)
        remove_snapshot(conn, vm_id, point.base_id)
        remove_snapshot(conn, vm_id, user_snapshot.id)


# ----- block (LVM) domains ------------------------------------------------------------------


def test_it_backs_up_a_disk_on_a_glusterfs_domain(ssh_manager, destination, demo_sim, tmp_path):
    """A GlusterFS domain is a file domain vdsm mounts under mnt/glusterSD/SERVER:_VOLUME: its volumes
    are copied as files, full then incremental."""
    from ovirt.volumes import domain_location

    vm = VM.objects.get(manager=ssh_manager, name="gluster01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["gluster01_os"]
        (sd,) = conn.system_service().storage_domains_service().list(search="name=data-gluster")
        assert (sd.storage.type, sd.storage.vfs_type) == (types.StorageType.GLUSTERFS, "glusterfs")
        location = domain_location(conn, sd.id)
        assert location.mount_dir == f"/rhev/data-center/mnt/glusterSD/gluster.example.internal:_vmstore/{sd.id}"
        points = []
        for n in range(2):
            if n:
                demo_sim.guest_write(disk.id, 5 * MiB, b"\x49" * MiB)
            job = ssh_backup(vm, destination)
            assert job.status == Job.Status.SUCCEEDED, job.error
            point = BackupPoint.objects.get(pk=job.result["point"])
            points.append(point)
            assert point.get_consistency_display() == "Cold (powered off)"  # gluster01 is down: nothing quiesced
            assert_clean_engine(conn, vm_id, {point.base_id})
            expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, f"gluster{n}")["gluster01_os"]
            assert stored_equals(point, disk.id, expected)
        assert [p.type for p in points] == ["full", "incremental"]
        assert points[1].bytes_transferred < 4 * MiB
        remove_snapshot(conn, vm_id, points[1].base_id)


# ----- a chain that changes while it is read ----------------------------------------------------


@pytest.mark.parametrize("removed", ["an older snapshot of the user's", "the kept snapshot"])
def test_it_starts_again_as_a_full_when_a_snapshot_is_removed_while_the_volumes_are_read(
    ssh_manager, destination, demo_sim, tmp_path, monkeypatch, removed
):
    """Nothing on the engine holds the volumes read over SSH: a snapshot removed on the engine right
    after the backup listed the disk's chain merges its volumes under the reader (a volume rebased
    onto another parent, or merged away). The backup starts again as a full, saying why, and the
    point holds what the guest wrote; it never stores the chain it listed, nor fails."""
    import ovirtsdk4.types as types

    import strategies.ssh_transfer as ssh_transfer
    from tests.ovirtsim.helpers import wait_for

    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        disk = disks_of(conn, vm_id)["test01_os"]
        snapshots = conn.system_service().vms_service().vm_service(vm_id).snapshots_service()
        user = snapshots.add(types.Snapshot(description="before the upgrade", persist_memorystate=False))
        wait_for(lambda: snapshots.snapshot_service(user.id).get().snapshot_status == types.SnapshotStatus.OK)
        demo_sim.guest_write(disk.id, 1 * MiB, b"\x41" * MiB)
        first = ssh_backup(vm, destination, type="full")
        assert first.status == Job.Status.SUCCEEDED, first.error
        kept = BackupPoint.objects.get(pk=first.result["point"]).base_id
        demo_sim.guest_write(disk.id, 3 * MiB, b"\x42" * MiB)

        listed = ssh_transfer.disk_volumes

        def then_removed(connection, disk_id):
            volumes = listed(connection, disk_id)
            if disk_id == disk.id and not getattr(then_removed, "done", False):
                then_removed.done = True
                remove_snapshot(conn, vm_id, user.id if removed.startswith("an older") else kept)
            return volumes

        monkeypatch.setattr(ssh_transfer, "disk_volumes", then_removed)
        job = ssh_backup(vm, destination, type="incremental")
        assert job.status == Job.Status.SUCCEEDED, job.error
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert point.type == "full" and point.parent is None
        assert point.note.startswith(
            "Full backup, started again: the volume chain of disk test01_os since the snapshot kept by backup "
            f"{first.result['point']} changed on the engine ("
        ), point.note
        left = {user.id} if removed == "the kept snapshot" else set()
        assert_clean_engine(conn, vm_id, {point.base_id} | left)
        expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, "after")
        for alias, disk_of_vm in disks_of(conn, vm_id).items():
            assert stored_equals(point, disk_of_vm.id, expected[alias]), alias
        for snapshot_id in {point.base_id} | left:
            remove_snapshot(conn, vm_id, snapshot_id)


def test_it_removes_no_snapshot_of_a_vm_while_its_backup_runs_and_leaves_it_to_the_next(
    ssh_manager, destination, demo_sim
):
    """A deletion (or a prune) or the reaper, while a backup of the VM runs, does not start removing a
    snapshot of ours: the engine would merge the volumes the backup reads. The VM's next backup removes
    them before it reads anything, once a removal announced elsewhere was asked."""
    from datetime import timedelta

    from django.utils import timezone

    from jobs.models import SnapshotRemoval
    from jobs.tasks import retry_undoing_left_objects
    from ovirt.snapshots import create_snapshot
    from repository.retention import delete_backup

    vm = VM.objects.get(manager=ssh_manager, name="test01")
    vm_id = str(vm.engine_id)
    first = ssh_backup(vm, destination, type="full")
    assert first.status == Job.Status.SUCCEEDED, first.error
    point = BackupPoint.objects.get(pk=first.result["point"])
    dead = Job.objects.create(kind="backup", manager=vm.manager, status=Job.Status.FAILED, name="dead")
    with demo_sim.connect() as conn:
        left, _, _ = create_snapshot(conn, vm_id, description=f"job {dead.pk}", quiesce=False, job=dead)
        running = Job.objects.create(
            kind="backup", vm=vm, manager=vm.manager, status=Job.Status.RUNNING, heartbeat=timezone.now()
        )
        assert delete_backup(point=point, with_dependants=False) == [point.pk]
        retry_undoing_left_objects()
        assert_clean_engine(conn, vm_id, {point.base_id, left.id})  # still there, and not being merged
        assert [o["id"] for o in Job.objects.get(pk=dead.pk).engine_objects] == [left.id]
        assert dead.events.filter(message__contains=f"is left for now: backup job {running.pk} of the VM").exists()

        Job.objects.filter(pk=running.pk).update(status=Job.Status.SUCCEEDED)
        # A removal another node is asking: the backup starts once it was asked (or its announcement ended).
        SnapshotRemoval.objects.create(
            vm_engine_id=vm_id,
            snapshot_id=point.base_id,
            holder="a deletion",
            node="elsewhere",
            pid=1,
            expires=timezone.now() + timedelta(seconds=2),
        )
        job = ssh_backup(vm, destination, type="incremental")
        assert job.status == Job.Status.SUCCEEDED, job.error
        assert job.events.filter(message__startswith=f"Waiting for the removal of snapshot {point.base_id}").exists()
        assert job.events.filter(message__startswith="Removing snapshot 'ovirt-backup: job").count() == 2
        again = BackupPoint.objects.get(pk=job.result["point"])
        assert_clean_engine(conn, vm_id, {again.base_id})
        # The reaper's next try of that job, once its wait after a failed one has passed.
        retry_undoing_left_objects(now=timezone.now() + timedelta(hours=2))
        assert Job.objects.get(pk=dead.pk).engine_objects == []
        remove_snapshot(conn, vm_id, again.base_id)
