"""Restores through the proxy VM: each new disk attached to proxy01 writable, written there as a local
block device, detached; the VM recreated from its OVF. And the rule every restore path keeps: a thin
RAW disk restored onto block storage becomes preallocated, saying so."""

import io
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from django.core.management import call_command

from inventory.models import VM
from jobs.models import Job, Node
from jobs.placement import placement_of, why_no_node
from jobs.runner import run_job
from ovirt.snapshots import remove_snapshot
from recovery.restore import request_restore
from repository.models import BackupPoint
from tests.helpers import backup, disks_of, restore, restore_disks
from tests.ovirtsim.helpers import download, identical

pytestmark = [pytest.mark.django_db]


def attached_to(conn, vm_id: str) -> set[str]:
    return {a.id for a in conn.system_service().vms_service().vm_service(vm_id).disk_attachments_service().list()}


def engine_disks(conn) -> set[str]:
    return {d.id for d in conn.system_service().disks_service().list()}


def test_it_restores_a_vm_through_the_proxy_as_it_was_backed_up(
    proxy01, manager, destination, demo_sim, api_as, tmp_path
):
    """web01's two disks (a thin QCOW2 and a thin RAW one), backed up as QCOW2 images: the command
    line asks for the proxy, the disks are written through proxy01 and equal the point, and nothing
    stays attached to proxy01. The API chooses the path the same way."""
    web01 = VM.objects.get(manager=manager, name="web01")
    point = BackupPoint.objects.get(pk=backup(web01, destination, type="full").result["point"])
    proxy_id = str(proxy01.vm.engine_id)
    devices = Path(proxy01.device_dir)
    with demo_sim.connect() as conn:
        remove_snapshot(conn, str(web01.engine_id), point.base_id)
        attached_before, devices_before = attached_to(conn, proxy_id), set(devices.iterdir())

        out = io.StringIO()
        call_command("restore", str(point.pk), "--name", "web01-via-proxy", "--transfer", "proxy", stdout=out)
        job = Job.objects.get(pk=int(out.getvalue().split()[0]))
        assert job.params["transfer"] == "proxy"
        assert placement_of(job).says == "runs inside proxy VM proxy01 of cluster Production"
        run_job(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error
        vm_id = job.result["vm_id"]
        try:
            messages = list(job.events.values_list("message", flat=True))
            assert f"Writing the restored disks through proxy VM proxy01 (node {proxy01.node_id})" in messages
            restored = disks_of(conn, vm_id)
            assert set(restored) == {"web01_os", "web01_data"}
            files = {e.alias: point.directory.path / e.file for e in point.manifest().disks}
            for alias, disk in restored.items():
                assert any(m.startswith(f"Disk {alias} written through proxy VM proxy01 (/dev/loop") for m in messages)
                copy = tmp_path / f"{alias}.raw"
                download(conn, demo_sim.ca_file, copy, disk_id=disk.id, fmt="raw", out_fmt="raw")
                assert identical(files[alias], copy), alias
            assert attached_to(conn, proxy_id) == attached_before
            assert set(devices.iterdir()) == devices_before
            assert job.engine_objects == []
        finally:
            conn.system_service().vms_service().vm_service(vm_id).remove(detach_only=False)

    response = api_as("operator").post(f"/api/v1/backups/{point.pk}/restore/", {"name": "x", "transfer": "proxy"})
    assert response.status_code == 202, response.content
    queued = Job.objects.get(pk=response.json()["job"])
    assert queued.params["transfer"] == "proxy"
    queued.request_cancel()


def test_it_leaves_nothing_when_the_device_never_appears_and_waits_for_a_proxy_node(
    proxy01, manager, destination, demo_sim, settings, tmp_path
):
    """The disk was attached but no device appeared on the proxy: the job names what it expected and
    what was there, and the disk it made is detached and removed. A restore into a cluster without a
    proxy is refused; one whose proxy's node is down waits, saying so."""
    legacy01 = VM.objects.get(manager=manager, name="legacy01")
    point = BackupPoint.objects.get(pk=backup(legacy01, destination, strategy="disk_attachment").result["point"])
    assert point.strategy == "disk_attachment"
    settings.PROXY_DEVICE_TIMEOUT = 1
    empty = tmp_path / "by-id"
    empty.mkdir()
    proxy01.device_dir = str(empty)
    proxy01.save()
    proxy_id = str(proxy01.vm.engine_id)
    with demo_sim.connect() as conn:
        disks_before, attached_before = engine_disks(conn), attached_to(conn, proxy_id)
        job = restore(point, "legacy01-no-device")  # auto: a disk attachment point goes through the proxy
        assert job.params["transfer"] == "proxy"
        assert job.status == Job.Status.FAILED
        assert job.error.startswith("Disk ") and "was attached to the proxy VM, but scsi-0QEMU_QEMU_HARDDISK_" in (
            job.error
        )
        assert f"did not appear in {empty} within 1 s (found: nothing)." in job.error, job.error
        assert job.engine_objects == []
        assert engine_disks(conn) == disks_before
        assert attached_to(conn, proxy_id) == attached_before
        assert conn.system_service().vms_service().list(search="name=legacy01-no-device") == []

    with pytest.raises(ValueError, match="No proxy VM is marked in cluster Development to restore through"):
        request_restore(point=point, origin="cli", name="x", cluster="Development", transfer="proxy")
    Node.objects.filter(name=proxy01.node_id).update(status=Node.Status.LOST)
    assert request_restore(point=point, origin="cli", name="y").params["transfer"] == "imageio"
    waiting = request_restore(point=point, origin="cli", name="z", transfer="proxy")
    assert why_no_node(waiting).startswith("no worker node is online (")
    Node.objects.create(name="other-node", version="test", heartbeat=proxy01.node.heartbeat)
    assert why_no_node(waiting) == (
        "no online node runs inside proxy VM proxy01 of cluster Production (other-node serves every cluster; "
        f"{proxy01.node_id} is lost); it starts when one joins"
    )
    Job.objects.filter(status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED)


@pytest.mark.parametrize("transfer", ["imageio", "ssh", "proxy"])
def test_it_restores_a_thin_raw_disk_onto_block_storage_preallocated_saying_so(
    proxy01, ssh_manager, destination, demo_sim, transfer, tmp_path
):
    """web01_data is a thin RAW disk: restored onto the iSCSI domain data-block by any path, it becomes a
    preallocated RAW disk (block storage has no thin RAW disks), the job says so, and it holds the
    backup's data (written over whatever the new LV held)."""
    web01 = VM.objects.get(manager=ssh_manager, name="web01")
    point = BackupPoint.objects.get(pk=backup(web01, destination, strategy="disk_attachment").result["point"])
    job = restore_disks(point, disks=["web01_data"], floating=True, storage_domain="data-block", transfer=transfer)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.params["transfer"] == transfer
    warnings = list(job.events.filter(level="warning").values_list("message", flat=True))
    assert warnings == [
        "Disk web01_data: RAW disks on block storage domain data-block cannot be thin; restoring it preallocated."
    ]
    ((old, new),) = job.result["disks"].items()
    with demo_sim.connect() as conn:
        service = conn.system_service().disks_service().disk_service(new)
        try:
            disk = service.get()
            domain = conn.follow_link(disk.storage_domains[0])
            assert (domain.name, domain.storage.type) == ("data-block", types.StorageType.ISCSI)
            assert (disk.format, disk.sparse) == (types.DiskFormat.RAW, False)
            copy = tmp_path / "restored.raw"
            download(conn, demo_sim.ca_file, copy, disk_id=new, fmt="raw", out_fmt="raw")
            assert identical(point.directory.path / f"{old}.raw", copy)
        finally:
            service.remove()


def test_it_undoes_what_a_dead_restore_left_attached_to_the_proxy(proxy01, demo_sim):
    """What a worker killed mid-write leaves, as the restore records it: the new disk, then its
    attachment to the proxy. The reaper's undo detaches it first, then removes the disk."""
    from ovirt.attachments import attach_disk_writable
    from ovirt.leftovers import undo_engine_objects
    from tests.ovirtsim.helpers import MiB, add_disk

    proxy_id = str(proxy01.vm.engine_id)
    with demo_sim.connect() as conn:
        before = attached_to(conn, proxy_id)
        disk = add_disk(conn, name="restore_killed", size=4 * MiB, sd_name="data-nfs")
        attach_disk_writable(conn, proxy_id, disk_id=disk.id, interface="virtio")
        assert (Path(proxy01.device_dir) / f"virtio-{disk.id[:20]}").exists()
        objects = [
            {"kind": "disk", "id": disk.id, "name": "restore_killed"},
            {"kind": "disk_attachment", "id": disk.id, "proxy": proxy_id, "name": "restore_killed"},
        ]
        assert undo_engine_objects(conn, objects) == []
        assert attached_to(conn, proxy_id) == before
        assert disk.id not in engine_disks(conn)
        assert not (Path(proxy01.device_dir) / f"virtio-{disk.id[:20]}").exists()
