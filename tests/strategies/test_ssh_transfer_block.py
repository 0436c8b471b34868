"""The SSH transfer strategy on block storage domains: real LVM on loop devices, an LV per volume,
active per host. A run activates what it reads and deactivates only what it activated, whatever
ends it (success, a fault, a cancel, a killed worker); a running VM's LVs stay the VM's."""

import contextlib
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from core.openssh import SshError
from inventory.models import VM
from jobs.models import Job
from ovirt.snapshots import remove_snapshot
from repository.models import BackupPoint
from strategies.backup import request_backup
from tests.helpers import (
    assert_clean_engine,
    assert_restored_as,
    back_up_after_writes,
    disks_of,
    processes_using,
    reference,
    restore,
    stored_equals,
)
from tests.strategies.test_ssh_transfer import cancelled_once_data_moves, ssh_backup

MiB = 1024**2


@contextlib.contextmanager
def vm_on_block(manager, demo_sim, name: str, *, raw_size: int = 24 * MiB, raw_data: int = MiB):
    """A VM of the test, down, in cluster Development (host3 reads its volumes): a thin QCOW2 disk and a
    preallocated RAW one holding `raw_data` bytes, both on the block domain `data-block` (an LV per
    volume, inactive). Yields the inventory VM and the domain's id (its volume group)."""
    from inventory.sync import sync_manager
    from tests.ovirtsim.helpers import add_disk

    with demo_sim.connect() as conn:
        cow = add_disk(conn, name=f"{name}_cow", size=32 * MiB, fmt="cow", sd_name="data-block")
        raw = add_disk(conn, name=f"{name}_raw", size=raw_size, fmt="raw", sparse=False, sd_name="data-block")
        demo_sim.guest_write(cow.id, 1 * MiB, b"\x41" * MiB)
        for offset in range(0, raw_data, 16 * MiB):  # the control call takes a few MiB at a time
            demo_sim.guest_write(raw.id, offset, b"\x42" * min(16 * MiB, raw_data - offset))
        demo_sim.guest_write(raw.id, raw_size - MiB, b"\x43" * MiB)
        cluster = conn.system_service().clusters_service().list(search="name=Development")[0]
        vms = conn.system_service().vms_service()
        engine_vm = vms.add(types.Vm(name=name, cluster=types.Cluster(id=cluster.id)))
        for disk in (cow, raw):
            vms.vm_service(engine_vm.id).disk_attachments_service().add(
                types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
            )
        sync_manager(manager)
        sd = conn.system_service().storage_domains_service().list(search="name=data-block")[0]
        try:
            yield VM.objects.get(manager=manager, name=name), sd.id
        finally:
            vms.vm_service(engine_vm.id).remove(detach_only=False)


@pytest.fixture
def block_vm(ssh_manager, demo_sim):
    with vm_on_block(ssh_manager, demo_sim, "sshblk01") as found:
        yield found


def lvs_of(demo_sim, conn, vm_id: str) -> set[str]:
    """Every volume (LV) of the VM's disks, as the engine lists them."""
    from ovirt.volumes import disk_volumes

    return {v for d in disks_of(conn, vm_id).values() for v in disk_volumes(conn, d.id)}


def assert_no_lv_left_active(demo_sim, sd_id: str, lvs: set[str]) -> None:
    lvm = demo_sim.lvm()
    assert {lv: lvm.active_on(sd_id, lv) for lv in lvs if lvm.active_on(sd_id, lv)} == {}


def assert_lvm_hides_the_domain_from_plain_commands(vm, sd_id: str, disk) -> None:
    """The hosts' own LVM filter hides the storage domains' devices (as vdsm-tool config-lvm-filter
    leaves a host): a plain `lvchange -ay` or `lvs` does not even find the VG, so what a backup
    activated, it activated with its own `--config` naming the domain's devices, as vdsm does."""
    from hosts.login import ssh_target
    from hosts.session import HostSession
    from inventory.models import Host

    host3 = Host.objects.get(manager=vm.manager, name="host3")  # its host key learnt by the backups
    with HostSession(ssh_target(host3)) as session:
        for plain in (f"lvchange -ay {sd_id}/{disk.image_id}", f"lvs {sd_id}"):
            with pytest.raises(SshError, match=f"Cannot process volume group {sd_id}"):
                session.run(plain, what="a plain LVM command")


@pytest.mark.slow
def test_it_backs_up_and_restores_a_vm_on_a_block_domain(block_vm, destination, demo_sim, tmp_path):
    vm, sd_id = block_vm
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        writes = [
            None,
            [("sshblk01_cow", 4 * MiB, 0x51), ("sshblk01_raw", 10 * MiB, 0x52)],
            [("sshblk01_cow", 20 * MiB, 0x53), ("sshblk01_raw", 4 * MiB + 512 * 1024, 0x54)],
        ]

        def activated_and_deactivated(job, point) -> None:
            assert job.events.filter(message__startswith="Activated logical volume").exists()
            assert job.events.filter(message__startswith="Deactivated logical volume").exists()
            assert_no_lv_left_active(demo_sim, sd_id, lvs_of(demo_sim, conn, vm_id))

        points, references = back_up_after_writes(
            conn, demo_sim, vm, destination, writes, tmp_path, run=ssh_backup, check=activated_and_deactivated
        )
        assert [p.type for p in points] == ["full", "incremental", "incremental"]
        assert points[2].bytes_transferred < 8 * MiB
        assert_lvm_hides_the_domain_from_plain_commands(vm, sd_id, disks_of(conn, vm_id)["sshblk01_cow"])

        for n, point in enumerate(points):
            transfer = "imageio" if n == 1 else "ssh"
            job = restore(point, f"sshblk-restored-{n}", transfer=transfer)
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert job.events.filter(message__contains="written into volume").count() == (0 if n == 1 else 2)
            restored_id = job.result["vm_id"]
            restored = assert_restored_as(conn, demo_sim, restored_id, references[n], tmp_path)
            assert {d.storage_domains[0].id for d in restored.values()} == {sd_id}
            assert_no_lv_left_active(demo_sim, sd_id, lvs_of(demo_sim, conn, restored_id))
            conn.system_service().vms_service().vm_service(restored_id).remove(detach_only=False)
        remove_snapshot(conn, vm_id, points[2].base_id)


def test_it_fails_in_words_when_an_lv_is_active_on_another_host(block_vm, destination, demo_sim):
    """host9 (no host of ours) holds the RAW disk's LVs: the engine cannot take the snapshot (it
    needs them) and says so; nothing is left behind."""
    vm, sd_id = block_vm
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        raw = disks_of(conn, vm_id)["sshblk01_raw"]
        assert demo_sim.set_lv_active_elsewhere(raw.id, "host9") == [raw.image_id]
        try:
            job = ssh_backup(vm, destination, type="full")
        finally:
            demo_sim.set_lv_active_elsewhere(raw.id, None)
        assert job.status == Job.Status.FAILED
        assert f"Failed to lock logical volume {sd_id}/{raw.image_id}" in job.error, job.error
        assert_clean_engine(conn, vm_id, set())
        assert_no_lv_left_active(demo_sim, sd_id, lvs_of(demo_sim, conn, vm_id))
        assert job.engine_objects == []
    assert [p.name for p in Path(destination.path).glob("*")] == []


def test_it_deactivates_what_it_activated_when_a_volume_cannot_be_activated(block_vm, destination, demo_sim):
    """The RAW disk's LV is held active by the SPM (host1, of another cluster): the engine's snapshot is
    taken there, but host3, where the volumes are read, cannot activate it. The QCOW2 disk, read
    first, was activated on host3 and is deactivated; the snapshot is removed; nothing is stored."""
    vm, sd_id = block_vm
    vm_id = str(vm.engine_id)
    with demo_sim.connect() as conn:
        raw = disks_of(conn, vm_id)["sshblk01_raw"]
        (spm,) = conn.system_service().hosts_service().list(search="name=host1")
        demo_sim.set_lv_active_elsewhere(raw.id, spm.id)
        try:
            job = ssh_backup(vm, destination, type="full")
        finally:
            demo_sim.set_lv_active_elsewhere(raw.id, None)
        assert job.status == Job.Status.FAILED, job.error
        assert f"Logical volume {sd_id}/{raw.image_id} of disk sshblk01_raw is active on another host" in job.error
        assert "LV locked by other host" in job.error and "host3" in job.error, job.error
        assert job.events.filter(message__startswith="Deactivated logical volume").exists()
        assert_clean_engine(conn, vm_id, set())
        assert_no_lv_left_active(demo_sim, sd_id, lvs_of(demo_sim, conn, vm_id))
        assert job.engine_objects == []
    assert [p.name for p in Path(destination.path).glob("*")] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_deactivates_what_it_activated_when_cancelled_or_killed(ssh_manager, slow_destination, demo_sim):
    """A backup of a VM that is down reads its volumes on host3, which it activates there: cancelled
    mid-copy, it deactivates them itself; its worker killed -9 alone mid-copy (the OOM killer's way),
    the LVs it activated are on its job and the reaper deactivates them over SSH before it removes the
    snapshot. The slow share keeps the copy going for seconds, so both act in its middle."""
    from jobs.tasks import reap_abandoned_jobs
    from tests.helpers import kill_worker_mid_transfer

    destination = slow_destination
    with vm_on_block(ssh_manager, demo_sim, "sshblk02", raw_data=16 * MiB) as (vm, sd_id):
        vm_id = str(vm.engine_id)
        job = cancelled_once_data_moves(vm, destination)
        assert job.events.filter(message__startswith="Deactivated logical volume").exists()
        with demo_sim.connect() as conn:
            assert_clean_engine(conn, vm_id, set())
            assert_no_lv_left_active(demo_sim, sd_id, lvs_of(demo_sim, conn, vm_id))
        assert [p.name for p in Path(destination.path).glob("*")] == []
        assert not processes_using(str(destination.path))

        job = request_backup(vm=vm, origin="cli", destination=destination, type="full", strategy="ssh_transfer")
        kill_worker_mid_transfer(job, alone=True)
        job.refresh_from_db()
        activated = {o["id"].split("/")[1] for o in job.engine_objects if o["kind"] == "lv"}
        with demo_sim.connect() as conn:
            lvs = lvs_of(demo_sim, conn, vm_id)  # the snapshot's volumes with the disks'
        assert activated and activated <= lvs
        assert all(demo_sim.lvm().active_on(sd_id, lv) for lv in activated)

        assert reap_abandoned_jobs(timeout_seconds=0) == 1
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and "stopped responding" in job.error
        assert job.events.filter(message__startswith="Deactivated logical volume").count() == len(activated)
        with demo_sim.connect() as conn:
            # Once the engine has merged the removed snapshot: the merge holds the chain's LVs meanwhile.
            assert_clean_engine(conn, vm_id, set())
        assert_no_lv_left_active(demo_sim, sd_id, lvs)
        assert [p.name for p in Path(destination.path).glob("*")] == []


def test_it_reads_a_running_vms_block_disk_and_leaves_its_lvs_to_the_vm(ssh_manager, destination, demo_sim, tmp_path):
    """db01 runs on host1 with a preallocated RAW disk on data-block: its qemu holds the chain's LVs
    active there, so the backup reads them as they are and deactivates nothing."""
    from ovirt.volumes import disk_volumes

    vm = VM.objects.get(manager=ssh_manager, name="db01")
    vm_id = str(vm.engine_id)
    lvm = demo_sim.lvm()
    with demo_sim.connect() as conn:
        disks = disks_of(conn, vm_id)
        data = disks["db01_data"]
        sd_id = data.storage_domains[0].id
        host_id = conn.system_service().vms_service().vm_service(vm_id).get().host.id
        points = []
        for n in range(2):
            if n:
                demo_sim.guest_write(data.id, 2 * MiB, b"\x44" * MiB)
            job = ssh_backup(vm, destination)
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert not job.events.filter(message__startswith="Activated logical volume").exists()
            point = BackupPoint.objects.get(pk=job.result["point"])
            points.append(point)
            assert_clean_engine(conn, vm_id, {point.base_id})
            expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, f"db01-{n}")
            for alias, disk in disks.items():
                assert stored_equals(point, disk.id, expected[alias]), (n, alias)
            for lv in disk_volumes(conn, data.id):
                assert lvm.holders(host_id, sd_id, lv) == [f"vm:{vm_id}"], lv
                assert lvm.active_on(sd_id, lv) == [host_id], lv
        assert [p.type for p in points] == ["full", "incremental"]
        remove_snapshot(conn, vm_id, points[1].base_id)
