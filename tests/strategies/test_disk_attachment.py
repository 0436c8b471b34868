"""The disk attachment strategy's own cases (the contract suite holds it to what every strategy does):
the proxy chosen by cluster, its stale attachments cleaned, and a device that never appears."""

import ovirtsdk4.types as types
import pytest
from django.utils import timezone

from inventory.models import VM, ProxyVM
from jobs.models import Job, Node
from jobs.placement import placement_of
from ovirt.attachments import attach_disk_snapshot, attached_disk_ids, detach_disk_snapshot
from ovirt.snapshots import SNAPSHOT_PREFIX, remove_snapshot
from strategies.backup import request_backup
from strategies.registry import get_strategy
from tests.helpers import assert_nothing_left_on_engine, backup
from tests.ovirtsim.helpers import wait_for

pytestmark = [pytest.mark.django_db]


def test_it_runs_on_the_proxy_of_the_vms_cluster_only(proxy01, manager, destination, settings):
    legacy01 = VM.objects.get(manager=manager, name="legacy01")  # Production
    test01 = VM.objects.get(manager=manager, name="test01")  # Development
    strategy = get_strategy("disk_attachment")
    assert strategy.vm_blocker(test01, []) == (
        "no proxy VM in cluster Development: mark one (Inventory > Proxy VMs, or manage.py proxy add)"
    )
    assert strategy.vm_blocker(proxy01.vm, []) == "the VM is a proxy VM: its disks cannot be attached to itself"
    job = request_backup(vm=legacy01, origin="cli", destination=destination, strategy="disk_attachment")
    where = placement_of(job)
    assert (where.node, where.says) == (settings.NODE_NAME, "runs inside proxy VM proxy01 of cluster Production")
    # A proxy of another cluster is never used for this VM, however idle its node.
    app01 = VM.objects.get(manager=manager, name="app01")
    dev_node = Node.objects.create(
        name="dev-node", version="test", vm_id=str(app01.engine_id), heartbeat=timezone.now()
    )
    ProxyVM.objects.create(vm=app01, node=dev_node)
    assert placement_of(job).node == settings.NODE_NAME
    other = request_backup(vm=test01, origin="cli", destination=destination, strategy="disk_attachment")
    assert placement_of(other).node == "dev-node"
    assert strategy.slots(job) == [
        {
            "key": f"proxy:{proxy01.pk}",
            "limit": 8,
            "label": "disks are already attached to proxy VM proxy01 (its most attached)",
        }
    ]
    Job.objects.update(status="cancelled")


def test_it_detaches_what_a_crashed_run_left_on_the_proxy_first(proxy01, manager, destination, demo_sim):
    legacy01 = VM.objects.get(manager=manager, name="legacy01")
    with demo_sim.connect() as conn:
        snapshots = conn.system_service().vms_service().vm_service(str(legacy01.engine_id)).snapshots_service()
        left = snapshots.add(types.Snapshot(description=f"{SNAPSHOT_PREFIX} job 0"))
        wait_for(lambda: snapshots.snapshot_service(left.id).get().snapshot_status.value == "ok", what="the snapshot")
        disk_id = str(legacy01.disks.get().engine_id)
        attach_disk_snapshot(conn, str(proxy01.vm.engine_id), disk_id=disk_id, snapshot_id=left.id, interface="virtio")
        job = backup(legacy01, destination, strategy="disk_attachment")
        assert job.status == Job.Status.SUCCEEDED, job.error
        messages = list(job.events.values_list("message", flat=True))
        assert f"Detaching disk {disk_id} from proxy VM proxy01, left by an earlier run" in messages
        assert any(
            m.startswith(f"Removing snapshot '{SNAPSHOT_PREFIX} job 0' left by an earlier run") for m in messages
        )
        assert_nothing_left_on_engine(conn, demo_sim, str(legacy01.engine_id), set())


def test_it_says_what_it_expected_when_the_device_never_appears(
    proxy01, manager, destination, demo_sim, settings, tmp_path
):
    settings.PROXY_DEVICE_TIMEOUT = 1
    empty = tmp_path / "by-id"
    empty.mkdir()
    ProxyVM.objects.filter(pk=proxy01.pk).update(device_dir=str(empty))
    legacy01 = VM.objects.get(manager=manager, name="legacy01")
    disk_id = str(legacy01.disks.get().engine_id)
    job = backup(legacy01, destination, strategy="disk_attachment")
    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        f"Disk {disk_id} was attached to the proxy VM, but scsi-0QEMU_QEMU_HARDDISK_{disk_id[:20]} did not appear in "
        f"{empty} "
        "within 1 s (found: nothing)."
    ), job.error
    assert job.engine_objects == []
    with demo_sim.connect() as conn:
        assert_nothing_left_on_engine(conn, demo_sim, str(legacy01.engine_id), set())


def test_it_leaves_alone_what_another_running_backup_attached_to_the_proxy(proxy01, manager, destination, demo_sim):
    """Several VMs are backed up at once through one proxy: a disk attached by a backup still running
    is no leftover of a crash, and stays attached."""
    web01 = VM.objects.get(manager=manager, name="web01")
    legacy01 = VM.objects.get(manager=manager, name="legacy01")
    proxy_id = str(proxy01.vm.engine_id)
    with demo_sim.connect() as conn:
        snapshots = conn.system_service().vms_service().vm_service(str(web01.engine_id)).snapshots_service()
        taken = snapshots.add(types.Snapshot(description=f"{SNAPSHOT_PREFIX} job running"))
        wait_for(lambda: snapshots.snapshot_service(taken.id).get().snapshot_status.value == "ok", what="the snapshot")
        disk_id = str(web01.disks.order_by("name").first().engine_id)
        attach_disk_snapshot(conn, proxy_id, disk_id=disk_id, snapshot_id=taken.id, interface="virtio_scsi")
        running = Job.objects.create(kind="backup", vm=web01, status=Job.Status.RUNNING, name="web01")
        running.remember_engine_object("disk_attachment", disk_id, proxy=proxy_id)
        try:
            job = backup(legacy01, destination, strategy="disk_attachment")
            assert job.status == Job.Status.SUCCEEDED, job.error
            assert not job.events.filter(message__contains="left by an earlier run").exists()
            assert disk_id in attached_disk_ids(conn, proxy_id)
        finally:
            detach_disk_snapshot(conn, proxy_id, disk_id)
            remove_snapshot(conn, str(web01.engine_id), taken.id)
            Job.objects.filter(pk=running.pk).update(status=Job.Status.CANCELLED)
