"""Disk attachment: reading an attached disk snapshot on the proxy against qemu-img, in one run.

    .venv/bin/python bench/disk_attachment.py [--warm]

On the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data, cluster Development),
with app01 of that cluster started and made this node's proxy VM, times:
  - `qemu-img convert -O raw -S 64k` of the attached disk snapshot's block device into a sparse
    RAW file (the peer: what any proxy-based tool does),
  - our read of the same device (strategies.disk_attachment.reader, hashing as it reads, as the
    backup does),
  - our whole disk attachment backup job of the VM (snapshot, attach, read, detach, OVF, manifest),
and prints the ratios. Both copies are compared with the source image; the page cache is dropped
before each run when this process may (root) and `--warm` is not given.
"""

import subprocess
import sys
from pathlib import Path

import blake3
import checks
from backup import timed
from workspace import demo_vm, open_workspace, run_or_exit, volume_file

MiB, GiB = 1024**2, 1024**3


def main() -> None:
    work = open_workspace("bench-attach-")
    import ovirtsdk4.types as types
    from django.conf import settings
    from django.utils import timezone

    from inventory.models import VM, ProxyVM
    from jobs.models import Node
    from ovirt.attachments import attach_disk_snapshot, detach_disk_snapshot
    from ovirt.snapshots import remove_snapshot
    from repository.models import BackupPoint
    from strategies.backup import request_backup
    from strategies.disk_attachment.devices import wait_for_device
    from strategies.disk_attachment.reader import copy_sparse
    from tests.ovirtsim.helpers import wait_for

    with demo_vm(work) as (sim, vm, destination):
        disk = vm.disks.get()
        source = volume_file(sim, work, disk)
        allocated = checks.source_image(source, fmt="qcow2", virtual_size=disk.provisioned_size)
        print(f"disk {disk.name}: {disk.provisioned_size / GiB:.0f} GiB virtual, {allocated / MiB:.0f} MiB allocated")
        app01 = VM.objects.get(manager=vm.manager, name="app01")
        with sim.connect() as conn:
            service = conn.system_service().vms_service().vm_service(str(app01.engine_id))
            service.start()
            wait_for(lambda: service.get().status == types.VmStatus.UP, what="app01 to run", timeout=60)
        device_dir = Path(sim.set_runs_here(str(app01.engine_id)))
        node = Node.objects.create(
            name=settings.NODE_NAME, version="bench", vm_id=str(app01.engine_id), heartbeat=timezone.now()
        )
        ProxyVM.objects.create(vm=app01, node=node, device_dir=str(device_dir))

        with sim.connect() as conn:
            snapshots = conn.system_service().vms_service().vm_service(str(vm.engine_id)).snapshots_service()
            snapshot = snapshots.add(types.Snapshot(description="bench"))
            wait_for(
                lambda: snapshots.snapshot_service(snapshot.id).get().snapshot_status == types.SnapshotStatus.OK,
                what="the snapshot",
            )
            disk_id = str(disk.engine_id)
            attach_disk_snapshot(
                conn, str(app01.engine_id), disk_id=disk_id, snapshot_id=snapshot.id, interface="virtio_scsi"
            )
            try:
                device = wait_for_device(device_dir, disk_id, "virtio_scsi")
                peer, ours = work / "peer.raw", work / "ours.raw"
                t_peer = timed(
                    "qemu-img convert -O raw -S 64k of the attached device",
                    lambda: subprocess.run(
                        ["qemu-img", "convert", "-f", "raw", "-O", "raw", "-S", "64k", str(device), str(peer)],
                        check=True,
                    ),
                )
                result = {}
                t_ours = timed(
                    "our read of the attached device (hashing as it reads)",
                    lambda: result.setdefault(
                        "read", copy_sparse(device, ours, digest=blake3.blake3(max_threads=blake3.blake3.AUTO))
                    ),
                )
                checks.same_image("qemu-img's copy", source, peer)
                checks.same_image("our copy", source, ours)
                read, written = result["read"]
                checks.equal("the bytes our read read", read, disk.provisioned_size)
                checks.at_most("the bytes our read wrote", written, "the disk's allocation", allocated)
                stored_peer, stored_ours = peer.stat().st_blocks * 512, ours.stat().st_blocks * 512
            finally:
                detach_disk_snapshot(conn, str(app01.engine_id), disk_id)
                remove_snapshot(conn, str(vm.engine_id), snapshot.id)

        jobs = {}
        t_job = timed(
            "our disk attachment backup job",
            lambda: jobs.setdefault(
                "backup",
                run_or_exit(request_backup(vm=vm, origin="cli", destination=destination, strategy="disk_attachment")),
            ),
        )
        point = BackupPoint.objects.get(pk=jobs["backup"].result["point"])
        checks.same_image("our backup's point", source, point.directory.path / f"{disk.engine_id}.raw")

        bench = "disk_attachment"
        checks.ratio(bench, "our read / qemu-img convert of the attached device", t_ours, t_peer, goal="<= 1.11")
        checks.ratio(bench, "backup job / qemu-img convert of the attached device", t_job, t_peer)
        print()
        print(
            f"qemu-img convert / our read: {t_peer / t_ours:.2f}x speed (goal >= 0.9x); "
            f"stored {stored_ours / MiB:.0f} MiB (qemu-img {stored_peer / MiB:.0f} MiB)"
        )
        print(f"whole backup job: {t_job:.2f}s, {t_job / t_peer:.2f}x the qemu-img read alone")


if __name__ == "__main__":
    sys.exit(main())
