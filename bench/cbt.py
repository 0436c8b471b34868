"""Change block tracking backups against a peer, in one run on the same disk.

    .venv/bin/python bench/cbt.py [--warm] [--cold-vm]

On the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data, with incremental backup
enabled), times:
  - `ovirt-img download-disk -f qcow2` of the disk through the engine and imageio (the peer; the
    VM is down for it, as the engine transfers no running VM's active volume),
  - our full CBT backup job (VM backup, every disk read from its point-in-time view with zero
    extents skipped, checksum, OVF, manifest, finalize),
  - our incremental CBT backup jobs after the guest changed 1% and 8% of the data the full read
    (1 MiB pieces spread over the disk),
and prints the full against the peer, each incremental's bytes read against the bytes changed
(+ 1 MiB), and the incrementals' cost law: the line through (bytes changed, seconds), whose
intercept is the fixed cost of an incremental and whose slope is its cost per changed byte, set
against the full's cost per byte read. The VM runs during the backups (a live backup through its
qemu) unless `--cold-vm`. Ratios are printed, never asserted.
"""

import os
import subprocess
import sys

import checks
from backup import timed
from workspace import demo_vm, open_workspace, run_or_exit, volume_file

MiB, GiB = 1024**2, 1024**3


def main() -> None:
    work = open_workspace("bench-cbt-")
    import ovirtsdk4 as sdk
    import ovirtsdk4.types as types

    from repository.models import BackupPoint
    from strategies.backup import request_backup
    from tests.ovirtsim.helpers import wait_for

    with demo_vm(work) as (sim, vm, destination):
        disk = vm.disks.get()
        source = volume_file(sim, work, disk)
        allocated = checks.source_image(source, fmt="qcow2", virtual_size=disk.provisioned_size)
        print(f"disk {disk.name}: {disk.provisioned_size / GiB:.0f} GiB virtual, {allocated / MiB:.0f} MiB allocated")
        with sim.connect() as conn:
            vm_service = conn.system_service().vms_service().vm_service(str(vm.engine_id))
            disk_service = conn.system_service().disks_service().disk_service(str(disk.engine_id))
            if disk_service.get().backup != types.DiskBackup.INCREMENTAL:
                try:
                    disk_service.update(types.Disk(backup=types.DiskBackup.INCREMENTAL))
                except sdk.Error as e:
                    raise SystemExit(f"Cannot enable incremental backup on {disk.name}: {e}") from None
                from inventory.sync import sync_manager

                sync_manager(vm.manager)

            peer = work / "peer.qcow2"
            t_peer = timed(
                "ovirt-img download-disk",
                lambda: subprocess.run(
                    sim.ovirt_img("download-disk", "-f", "qcow2", str(disk.engine_id), str(peer)),
                    check=True,
                    stdout=subprocess.DEVNULL,
                ),
            )
            checks.same_image("ovirt-img's download", source, peer)
            if "--cold-vm" not in sys.argv:
                vm_service.start()
                wait_for(lambda: vm_service.get().status == types.VmStatus.UP, timeout=120, what="the VM to run")
            print(f"the VM is {vm_service.get().status.value} during the backups")

        def run(kind):
            job = run_or_exit(request_backup(vm=vm, origin="cli", destination=destination, type=kind, strategy="cbt"))
            return BackupPoint.objects.get(pk=job.result["point"])

        points = {}
        t_full = timed("our full CBT backup job", lambda: points.setdefault("full", run("full")))
        # The VM may run now: our image is held to the peer's copy of the same state, not the volume.
        checks.same_image("our full CBT backup", peer, points["full"].directory.path / f"{disk.engine_id}.qcow2")

        def change(size: int, piece: int = MiB) -> int:
            """The guest writes `size` bytes in pieces spread over the data (16 MiB every 128 MiB):
            the bytes written."""
            count = max(1, size // piece)
            slots = [n * 128 * MiB + k * piece for k in range(16 * MiB // piece) for n in range(64)]
            step = max(1, len(slots) // count)
            offsets = slots[::step][:count]
            for offset in offsets:
                sim.guest_write(str(disk.engine_id), offset, os.urandom(piece))
            return len(offsets) * piece

        incrementals = []
        for percent in (1, 8):
            changed = checks.positive("the bytes the guest changed", change(allocated * percent // 100 // MiB * MiB))
            label = f"inc{percent}"
            elapsed = timed(
                f"our incremental CBT backup job ({percent}% of the data changed, {changed / MiB:.0f} MiB)",
                lambda label=label: points.setdefault(label, run("incremental")),
            )
            checks.equal(f"the type of the {percent}% backup ({points[label].note})", points[label].type, "incremental")
            checks.at_least(
                f"the bytes the {percent}% incremental read",
                points[label].bytes_transferred,
                "the bytes changed",
                changed,
            )
            incrementals.append((changed, elapsed))
        if "--cold-vm" in sys.argv:  # a running VM's qemu holds its volume: read only when it is down
            last = points["inc8"].directory.path / f"{disk.engine_id}.qcow2"
            checks.same_image(
                "the last incremental (with its chain) against the disk now", volume_file(sim, work, disk), last
            )
        full = points["full"]
        checks.positive("the bytes the full read", full.bytes_transferred)
        checks.at_most("the bytes the full read", full.bytes_transferred, "the disk's size", disk.provisioned_size)
        fixed, per_byte = checks.incrementals_cost(incrementals)
        full_per_byte = t_full / full.bytes_transferred
        bench = "cbt"
        checks.ratio(bench, "full CBT backup / ovirt-img download-disk", t_full, t_peer, goal="<= 1.0")
        for (changed, _), percent in zip(incrementals, (1, 8), strict=True):
            read = points[f"inc{percent}"].bytes_transferred
            checks.ratio(
                bench, f"incremental ({percent}%): bytes read / (changed + 1 MiB)", read, changed + MiB, goal="<= 1.1"
            )
        checks.ratio(bench, "incremental per changed MiB / full per MiB read", per_byte, full_per_byte, goal="<= 1.1")
        print()
        print(f"full CBT backup / ovirt-img download-disk: {t_full / t_peer:.2f}x (goal <= 1.0x)")
        print(
            f"full: read {full.bytes_transferred / MiB:.0f} MiB for {allocated / MiB:.0f} MiB allocated, stored "
            f"{full.bytes_stored / MiB:.0f} MiB; ovirt-img stored {peer.stat().st_blocks * 512 / MiB:.0f} MiB"
        )
        for (changed, elapsed), percent in zip(incrementals, (1, 8), strict=True):
            inc = points[f"inc{percent}"]
            bound = changed + MiB
            print(
                f"incremental ({percent}%): {elapsed:.2f}s, read {inc.bytes_transferred / MiB:.1f} MiB for "
                f"{changed / MiB:.0f} MiB changed: {inc.bytes_transferred / bound:.2f}x of changed + 1 MiB "
                f"(goal <= 1.1x), stored {inc.bytes_stored / MiB:.1f} MiB"
            )
        print(
            f"incremental cost law: {fixed:.2f}s fixed + {per_byte * MiB * 1000:.2f} ms per changed MiB; the full "
            f"costs {full_per_byte * MiB * 1000:.2f} ms per MiB read: {per_byte / full_per_byte:.2f}x (goal <= 1.1x)"
        )
        for label, point in [("full", full)] + [(f"incremental ({p}%)", points[f"inc{p}"]) for p in (1, 8)]:
            events = list(point.job.events.order_by("pk"))
            start = events[0].time
            steps = "; ".join(f"+{(e.time - start).total_seconds():.2f}s {e.message[:40]}" for e in events)
            print(f"{label} job steps: {steps}")


if __name__ == "__main__":
    main()
