"""Full and incremental backup speed against peers, in one run on the same disk.

    .venv/bin/python bench/backup.py

On the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data), times:
  - a local `qemu-img convert -O qcow2` of the source image (the floor),
  - `ovirt-img download-disk -f qcow2` through the engine and imageio (the peer),
  - our full backup job (snapshot, image transfer, checksum, OVF, manifest),
  - our incremental backup job after the guest changed 1% of the disk (82 MiB), and another
    after it changed 1% of the data the full read (10 MiB),
and prints ratios plus bytes read against allocated bytes. Page cache is dropped before each
run when this process may (root); otherwise the figures say so.
"""

import os
import subprocess
import time
from pathlib import Path

from workspace import open_workspace

MiB, GiB = 1024**2, 1024**3


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(label: str, fn) -> float:
    cold = drop_caches()
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    print(f"  {label}: {elapsed:.2f}s{'' if cold else ' (page cache not dropped)'}", flush=True)
    return elapsed


def main() -> None:
    work = open_workspace("bench-backup-")
    from inventory.models import VM, Manager
    from inventory.sync import sync_manager
    from jobs.models import Job
    from jobs.runner import run_job
    from ovirtsim import Simulator
    from repository.models import BackupDestination, BackupPoint
    from strategies.backup import request_backup

    with Simulator(work / "engine", seed="demo") as sim:
        manager = Manager.objects.create(name="bench", **sim.manager_fields)
        sync_manager(manager)
        (work / "repo").mkdir()
        destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))
        vm = VM.objects.get(manager=manager, name="bigdata01")
        disk = vm.disks.get()
        source = next((work / "engine" / "storage").glob(f"*/images/{disk.engine_id}/*"))
        allocated = source.stat().st_blocks * 512
        print(f"disk {disk.name}: {disk.provisioned_size / GiB:.0f} GiB virtual, {allocated / MiB:.0f} MiB allocated")

        local = work / "local.qcow2"
        t_local = timed(
            "qemu-img convert (local)",
            lambda: subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(source), str(local)], check=True),
        )
        peer = work / "peer.qcow2"
        t_peer = timed(
            "ovirt-img download-disk",
            lambda: subprocess.run(
                sim.ovirt_img("download-disk", "-f", "qcow2", str(disk.engine_id), str(peer)),
                check=True,
                stdout=subprocess.DEVNULL,
            ),
        )

        def run(kind):
            job = request_backup(vm=vm, destination=destination, type=kind)
            run_job(job.pk)
            job.refresh_from_db()
            if job.status != Job.Status.SUCCEEDED:
                raise SystemExit(f"backup failed: {job.error}")
            return BackupPoint.objects.get(pk=job.result["point"])

        points = {}
        t_full = timed("our full backup job", lambda: points.setdefault("full", run("full")))

        def change(size: int, piece: int = 4 * MiB) -> None:
            """The guest writes `size` bytes in pieces spread over the whole disk."""
            count = max(1, size // piece)
            step = disk.provisioned_size // count
            for offset in range(0, disk.provisioned_size - piece, step)[:count]:
                sim.guest_write(str(disk.engine_id), offset, os.urandom(piece))

        change(disk.provisioned_size // 100)  # 1% of the virtual size: 82 MiB
        t_inc = timed(
            "our incremental backup job (1% of the disk changed)", lambda: points.setdefault("inc", run("incremental"))
        )
        change(allocated // 100, MiB)  # 1% of the data the full read: 10 MiB
        t_inc_data = timed(
            "our incremental backup job (1% of the data changed)", lambda: points.setdefault("inc2", run("incremental"))
        )
        full, inc = points["full"], points["inc"]
        assert inc.type == points["inc2"].type == "incremental", inc.note
        print()
        print(f"full backup / ovirt-img download-disk: {t_full / t_peer:.2f}x (target <= 1.25x)")
        print(f"full backup / local qemu-img convert:  {t_full / t_local:.2f}x")
        print(f"incremental / full backup:             {t_inc / t_full:.2%} (target < 10%; 1% of the virtual size)")
        print(f"incremental / full backup:             {t_inc_data / t_full:.2%} (1% of the allocated data)")
        print(
            f"full: read {full.bytes_transferred / MiB:.0f} MiB for {allocated / MiB:.0f} MiB allocated "
            f"({full.bytes_transferred / allocated:.2f}x), stored {full.bytes_stored / MiB:.0f} MiB; "
            f"ovirt-img stored {peer.stat().st_blocks * 512 / MiB:.0f} MiB"
        )
        print(
            f"incremental: read {inc.bytes_transferred / MiB:.0f} MiB, stored {inc.bytes_stored / MiB:.0f} MiB "
            f"for {disk.provisioned_size // 100 / MiB:.0f} MiB changed"
        )
        for label, point in (("full", full), ("incremental", inc), ("incremental (data)", points["inc2"])):
            events = list(point.job.events.order_by("pk"))
            start = events[0].time
            steps = "; ".join(f"+{(e.time - start).total_seconds():.2f}s {e.message[:40]}" for e in events)
            print(f"{label} job steps: {steps}")


if __name__ == "__main__":
    main()
