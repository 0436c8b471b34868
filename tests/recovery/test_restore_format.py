"""Restored disks are what the original disks were: their format and allocation as created, not as
the engine reports a disk under a snapshot (a thin QCOW2, its active layer), within the engine's
rules for the storage domain they are restored onto."""

import ovirtsdk4.types as types
import pytest

from inventory.models import VM
from jobs.models import Job
from repository.manifest import Manifest
from repository.models import BackupPoint
from tests.helpers import assert_restored_as, back_up_after_writes, backup, restore, restore_disks
from tests.ovirtsim.helpers import download, identical

MiB = 1024**2


@pytest.fixture
def formats_vm(ssh_manager, demo_sim):
    """A VM of the test, down, on the file domain: a thin RAW disk, a preallocated RAW one and a thin
    QCOW2 one, each holding some data."""
    from inventory.sync import sync_manager
    from tests.ovirtsim.helpers import add_disk

    with demo_sim.connect() as conn:
        made = [
            add_disk(conn, name="fmt01_raw_thin", size=8 * MiB, fmt="raw", sparse=True, sd_name="data-nfs"),
            add_disk(conn, name="fmt01_raw_full", size=8 * MiB, fmt="raw", sparse=False, sd_name="data-nfs"),
            add_disk(conn, name="fmt01_cow_thin", size=8 * MiB, fmt="cow", sparse=True, sd_name="data-nfs"),
        ]
        for n, disk in enumerate(made):
            demo_sim.guest_write(disk.id, n * MiB, bytes([0x61 + n]) * MiB)
        cluster = conn.system_service().clusters_service().list(search="name=Development")[0]
        vms = conn.system_service().vms_service()
        engine_vm = vms.add(types.Vm(name="fmt01", cluster=types.Cluster(id=cluster.id)))
        for disk in made:
            vms.vm_service(engine_vm.id).disk_attachments_service().add(
                types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
            )
        sync_manager(ssh_manager)
        try:
            yield VM.objects.get(manager=ssh_manager, name="fmt01")
        finally:
            vms.vm_service(engine_vm.id).remove(detach_only=False)


ORIGINAL = {  # alias -> (format, sparse) as created
    "fmt01_raw_thin": ("raw", True),
    "fmt01_raw_full": ("raw", False),
    "fmt01_cow_thin": ("cow", True),
}


@pytest.mark.slow
def test_it_restores_disks_under_a_kept_snapshot_in_their_original_format_and_allocation(
    formats_vm, destination, demo_sim, tmp_path
):
    """The incremental is taken with the full's snapshot kept under every disk: the engine then
    reports each disk as a thin QCOW2. The point records what each disk is, and both restore paths
    create it so: as a VM on the original domains through imageio, and as floating disks on the
    block domain over SSH, where the thin RAW disk becomes preallocated (said on the job) and the
    thin QCOW2 one stays thin; asked for thin there, the RAW disk becomes a thin QCOW2 one."""
    vm = formats_vm
    with demo_sim.connect() as conn:
        writes = [None, [("fmt01_raw_thin", 5 * MiB, 0x71)]]

        def back_up(vm, destination):
            if not BackupPoint.objects.filter(vm=vm).exists():
                return backup(vm, destination)
            # The incremental, with no disk's volumes listed under the disk (`disks/{id}/disksnapshots`
            # came with API 4.4.3): they are found among their storage domain's disk snapshots.
            fault = {"times": len(ORIGINAL), "status": 500, "methods": ["GET"], "path": "/disks/[^/]+/disksnapshots$"}
            demo_sim.set_faults(fail_requests=fault)
            try:
                return backup(vm, destination)
            finally:
                demo_sim.set_faults(fail_requests={})

        failed_before = demo_sim.failed_requests().get(500, 0)
        points, references = back_up_after_writes(conn, demo_sim, vm, destination, writes, tmp_path, run=back_up)
        point, reference = points[-1], references[-1]
        assert point.parent_id is not None, "the second backup builds on the kept snapshot"
        manifest = Manifest.read(point.directory.path)
        assert {d.alias: (d.disk_format, d.sparse) for d in manifest.disks} == ORIGINAL
        assert demo_sim.failed_requests().get(500, 0) - failed_before == len(ORIGINAL)
        assert not points[-1].job.events.filter(level="warning").exists()

        whole = restore(point, "fmt01-back", transfer="imageio")
        assert whole.status == Job.Status.SUCCEEDED, whole.error
        try:
            restored = assert_restored_as(conn, demo_sim, whole.result["vm_id"], reference, tmp_path)
            assert {a: (d.format.value, d.sparse) for a, d in restored.items()} == ORIGINAL
            # As allocated as the original: a preallocated disk takes its whole size on its domain, a
            # thin one on a file domain only what holds data.
            sizes = {a: d.actual_size for a, d in restored.items()}
            assert sizes["fmt01_raw_full"] >= 8 * MiB and sizes["fmt01_raw_thin"] < 8 * MiB, sizes
        finally:
            conn.system_service().vms_service().vm_service(whole.result["vm_id"]).remove(detach_only=False)

        floating = restore_disks(point, floating=True, storage_domain="data-block", transfer="ssh")
        assert floating.status == Job.Status.SUCCEEDED, floating.error
        warnings = [e.message for e in floating.events.filter(level="warning")]
        assert [w for w in warnings if "cannot be thin" in w] == [
            "Disk fmt01_raw_thin: RAW disks on block storage domain data-block cannot be thin; restoring it "
            "preallocated."
        ]
        disks = conn.system_service().disks_service()
        aliases = {d.disk_id: d.alias for d in manifest.disks}
        try:
            for old, new in floating.result["disks"].items():
                alias = aliases[old]
                disk = disks.disk_service(new).get()
                expected = ("raw", False) if alias == "fmt01_raw_thin" else ORIGINAL[alias]
                assert (disk.format.value, disk.sparse) == expected, alias
                out = tmp_path / f"floating-{alias}.raw"
                download(conn, demo_sim.ca_file, out, disk_id=new, fmt="raw", out_fmt="raw")
                assert identical(reference[alias], out), alias
        finally:
            for new in floating.result["disks"].values():
                disks.disk_service(new).remove()

        # Thin asked for, through imageio: a thin RAW disk on block storage is a thin QCOW2 one.
        thin = restore_disks(
            point, disks=["fmt01_raw_thin"], floating=True, storage_domain="data-block", allocation="thin"
        )
        assert thin.status == Job.Status.SUCCEEDED, thin.error
        (new,) = thin.result["disks"].values()
        try:
            disk = disks.disk_service(new).get()
            assert (disk.format, disk.sparse) == (types.DiskFormat.COW, True)
            assert thin.events.filter(level="warning", message__contains="restoring it as a thin QCOW2 disk").exists()
            out = tmp_path / "thin.raw"
            download(conn, demo_sim.ca_file, out, disk_id=new, fmt="raw", out_fmt="raw")
            assert identical(reference["fmt01_raw_thin"], out)
        finally:
            disks.disk_service(new).remove()


def test_it_records_a_disk_as_the_engine_reports_it_and_says_so_when_its_volumes_are_not_listed(
    manager, destination, demo_sim
):
    """Without the disk's volumes, what it was created as cannot be told: the point records what the
    engine reports, and the job says so and how a restore can be told otherwise."""
    from ovirt.vms import vm_disks
    from strategies.base import BackupRequest
    from strategies.image_transfer import ImageTransferStrategy

    vm = VM.objects.get(manager=manager, name="web01")
    job = Job.objects.create(kind="backup", vm=vm, manager=manager, name="web01")
    request = BackupRequest(vm=vm, destination=destination, type="full")
    with demo_sim.connect() as conn:
        disk = next(d for d in vm_disks(conn, str(vm.engine_id)) if d.alias == "web01_os")  # thin QCOW2
        strategy = ImageTransferStrategy(job=job, connection=conn, request=request)
        # Under the disk and under its storage domain.
        demo_sim.set_faults(fail_requests={"times": 2, "status": 500, "methods": ["GET"], "path": "/disksnapshots$"})
        try:
            assert strategy.manifest_entry(disk, fmt="qcow2", parent_file=None).disk_format == "cow"
        finally:
            demo_sim.set_faults(fail_requests={})
    (warning,) = job.events.filter(level="warning").values_list("message", flat=True)
    assert warning.startswith(f"Disk web01_os: The engine did not list the volumes of disk {disk.id}")
    assert "It is recorded as the engine reports its active volume (QCOW2, thin)" in warning
