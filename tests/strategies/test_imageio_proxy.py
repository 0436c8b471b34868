"""Image transfers when this node cannot reach the hosts: backups and restores go through the
engine's imageio proxy, as ovirt-img does, and the job says which path each disk took."""

import contextlib

import ovirtsdk4.types as types
import pytest

from inventory.models import VM
from jobs.models import Job
from repository.models import BackupPoint
from tests.helpers import assert_restored_as, backup, disks_of, reference, restore, stored_equals

MiB = 1024**2

# Not inside one test transaction: a job's progress reporter thread writes while its disks move.
pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def vm_of_the_test(manager, demo_sim, name: str, *, backup: str = "none"):
    """A VM of the test, down, with one thin QCOW2 disk on data-nfs holding 1 MiB (`backup`:
    "incremental" for change block tracking)."""
    from inventory.sync import sync_manager
    from tests.ovirtsim.helpers import add_disk

    with demo_sim.connect() as conn:
        disk = add_disk(conn, name=f"{name}_os", size=16 * MiB, fmt="cow", sd_name="data-nfs", backup=backup)
        demo_sim.guest_write(disk.id, MiB, b"\x61" * MiB)
        vms = conn.system_service().vms_service()
        engine_vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
        vms.vm_service(engine_vm.id).disk_attachments_service().add(
            types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
        )
        sync_manager(manager)
        try:
            yield conn, VM.objects.get(manager=manager, name=name)
        finally:
            vms.vm_service(engine_vm.id).remove(detach_only=False)


def paths(job: Job) -> list[str]:
    return list(job.events.filter(message__contains="imageio").values_list("message", flat=True))


def test_it_backs_up_and_restores_through_the_engines_proxy_when_the_hosts_are_unreachable(
    manager, destination, demo_sim, tmp_path
):
    with vm_of_the_test(manager, demo_sim, "proxied01") as (conn, vm):
        vm_id = str(vm.engine_id)
        (disk,) = disks_of(conn, vm_id).values()
        full = backup(vm, destination, type="full")
        assert full.status == Job.Status.SUCCEEDED, full.error
        (said,) = paths(full)
        assert said.startswith("Downloading disk proxied01_os directly from host "), said
        assert "'s imageio (127.0.0.1:" in said, said

        demo_sim.guest_write(disk.id, 5 * MiB, b"\x62" * MiB)
        demo_sim.set_hosts_reachable(False)
        try:
            job = backup(vm, destination)
            assert job.status == Job.Status.SUCCEEDED, job.error
            restored = restore(BackupPoint.objects.get(pk=job.result["point"]), "proxied01-restored")
            assert restored.status == Job.Status.SUCCEEDED, restored.error
        finally:
            demo_sim.set_hosts_reachable(True)
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert point.type == "incremental"
        for done, verb in ((job, "Downloading"), (restored, "Uploading")):
            (said,) = paths(done)
            assert said.startswith(f"{verb} disk proxied01_os through the engine's imageio proxy"), said
            assert "cannot be reached from this node" in said and "connection refused" in said, said

        expected = reference(conn, demo_sim, vm_id, point.base_id, tmp_path, "proxied")
        assert stored_equals(point, disk.id, expected["proxied01_os"])
        assert_restored_as(conn, demo_sim, restored.result["vm_id"], expected, tmp_path)
        conn.system_service().vms_service().vm_service(restored.result["vm_id"]).remove(detach_only=False)


def test_it_reads_only_the_changed_extents_through_the_engines_proxy(manager, destination, demo_sim, tmp_path):
    """A CBT incremental through the proxy: the dirty extents of the VM backup's export reach this
    node through the engine's daemon too, so only the changed MiB is read."""
    from tests.ovirtsim.helpers import identical, make_image

    with vm_of_the_test(manager, demo_sim, "proxied02", backup="incremental") as (conn, vm):
        (disk,) = disks_of(conn, str(vm.engine_id)).values()
        full = backup(vm, destination, type="full", strategy="cbt")
        assert full.status == Job.Status.SUCCEEDED, full.error
        demo_sim.guest_write(disk.id, 8 * MiB, b"\x63" * MiB)
        demo_sim.set_hosts_reachable(False)
        try:
            job = backup(vm, destination, strategy="cbt")
        finally:
            demo_sim.set_hosts_reachable(True)
        assert job.status == Job.Status.SUCCEEDED, job.error
        (said,) = paths(job)
        assert said.startswith("Downloading disk proxied02_os through the engine's imageio proxy"), said
        point = BackupPoint.objects.get(pk=job.result["point"])
        assert point.type == "incremental" and point.bytes_transferred <= 2 * MiB, (point.type, point.bytes_transferred)
        expected = tmp_path / "expected.raw"
        make_image(expected, size=16 * MiB, writes=[(0x61, MiB, MiB), (0x63, 8 * MiB, MiB)], fmt="raw")
        (entry,) = point.manifest().disks
        assert identical(point.directory.path / entry.file, expected)
