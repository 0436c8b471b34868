"""Full and incremental backup speed against peers, in one run on the same disk.

    .venv/bin/python bench/backup.py

On the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data), times:
  - a local `qemu-img convert -O qcow2` of the source image (the floor),
  - `ovirt-img download-disk -f qcow2` through the engine and imageio (the peer),
  - our full backup job (snapshot, image transfer, checksum, OVF, manifest),
  - our incremental backup jobs after the guest changed 1%, 4% and 8% of the data the full read
    (10, 41 and 82 MiB in 1 MiB pieces spread over the disk),
  - our full backup job again with the hosts unreachable from this node, so every byte comes
    through the engine's imageio proxy (both jobs must say on their log which path they took),
and prints ratios, bytes read against allocated bytes, and the incrementals' cost law: a line
fitted through (bytes changed, seconds) whose intercept is the fixed cost of an incremental and
whose slope is its cost per changed byte, set against the full's cost per byte read. Page cache
is dropped before each run when this process may (root) and `--warm` is not given; otherwise
the figures say so. (Dropping it also evicts the qemu and Python files every step loads, which
a backup node running jobs all day keeps cached: `--warm` shows the fixed cost without that.)
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import checks
from workspace import demo_vm, open_workspace, run_or_exit, volume_file

MiB, GiB = 1024**2, 1024**3


def drop_caches() -> bool:
    if "--warm" in sys.argv:
        return False
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
    elapsed = checks.positive(f"the time of {label}", time.perf_counter() - started)
    print(f"  {label}: {elapsed:.2f}s{'' if cold else ' (page cache not dropped)'}", flush=True)
    return elapsed


def main() -> None:
    work = open_workspace("bench-backup-")
    from repository.models import BackupPoint
    from strategies.backup import request_backup

    with demo_vm(work) as (sim, vm, destination):
        disk = vm.disks.get()
        source = volume_file(sim, work, disk)
        allocated = checks.source_image(source, fmt="qcow2", virtual_size=disk.provisioned_size)
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
        checks.same_image("the local qemu-img convert", source, local)
        checks.same_image("ovirt-img's download", source, peer)

        def run(kind):
            job = run_or_exit(request_backup(vm=vm, origin="cli", destination=destination, type=kind))
            return BackupPoint.objects.get(pk=job.result["point"])

        points = {}
        t_full = timed("our full backup job", lambda: points.setdefault("full", run("full")))
        image = points["full"].directory.path / f"{disk.engine_id}.qcow2"
        checks.same_image("our full backup", source, image)

        def change(size: int, piece: int = 4 * MiB) -> int:
            """The guest writes `size` bytes in pieces spread over the whole disk: the bytes written."""
            count = max(1, size // piece)
            step = disk.provisioned_size // count
            offsets = range(0, disk.provisioned_size - piece, step)[:count]
            for offset in offsets:
                sim.guest_write(str(disk.engine_id), offset, os.urandom(piece))
            return len(offsets) * piece

        incrementals = []
        for percent in (1, 4, 8):
            changed = checks.positive("the bytes the guest changed", change(allocated * percent // 100, MiB))
            label = f"inc{percent}"
            elapsed = timed(
                f"our incremental backup job ({percent}% of the data changed, {changed / MiB:.0f} MiB)",
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
        last = points["inc8"].directory.path / f"{disk.engine_id}.qcow2"
        checks.same_image(
            "the last incremental (with its chain) against the disk now", volume_file(sim, work, disk), last
        )
        full = points["full"]
        checks.positive("the bytes the full read", full.bytes_transferred)
        checks.at_most("the bytes the full read", full.bytes_transferred, "the disk's size", disk.provisioned_size)
        sim.set_hosts_reachable(False)
        try:
            t_proxy = timed(
                "our full backup job through the engine's imageio proxy (hosts unreachable)",
                lambda: points.setdefault("proxy", run("full")),
            )
        finally:
            sim.set_hosts_reachable(True)
        proxied = points["proxy"]
        for point, path in ((full, "directly from host"), (proxied, "through the engine's imageio proxy")):
            said = list(point.job.events.filter(message__contains="imageio").values_list("message", flat=True))
            checks.equal(
                f"the path backup {point.pk} says it read its disk by ({said})",
                bool(said) and all(path in m for m in said),
                True,
            )
        # The same disk, plus what the incrementals' writes allocated since the direct full.
        written = sum(changed for changed, _ in incrementals)
        checks.at_least(
            "the bytes the full through the proxy read",
            proxied.bytes_transferred,
            "the direct full's",
            full.bytes_transferred,
        )
        checks.at_most(
            "the bytes the full through the proxy read",
            proxied.bytes_transferred,
            "the direct full's plus twice what the incrementals wrote",
            full.bytes_transferred + 2 * written + 64 * MiB,
        )
        fixed, per_byte = checks.incrementals_cost(incrementals)
        full_per_byte = t_full / full.bytes_transferred
        bench = "backup"
        checks.ratio(bench, "full backup / ovirt-img download-disk", t_full, t_peer, goal="<= 1.0")
        checks.ratio(bench, "full backup / local qemu-img convert", t_full, t_local)
        checks.ratio(bench, "incremental per changed MiB / full per MiB read", per_byte, full_per_byte, goal="<= 1.1")
        checks.ratio(bench, "full: bytes read / bytes allocated", full.bytes_transferred, allocated)
        checks.record(bench, "incremental fixed cost", fixed, goal="<= 0.5", unit="s")
        checks.ratio(bench, "full backup through the engine's imageio proxy / directly from the host", t_proxy, t_full)
        print()
        print(f"full backup / ovirt-img download-disk: {t_full / t_peer:.2f}x (target <= 1.0x)")
        print(f"full backup / local qemu-img convert:  {t_full / t_local:.2f}x")
        print(
            f"full backup through the engine's imageio proxy / directly from the host: {t_proxy / t_full:.2f}x "
            f"({proxied.bytes_transferred / MiB:.0f} MiB in {t_proxy:.2f}s against "
            f"{full.bytes_transferred / MiB:.0f} MiB in {t_full:.2f}s)"
        )
        print(
            f"incremental cost law: {fixed:.2f}s fixed (target <= 0.5s) + {per_byte * MiB * 1000:.2f} ms per changed "
            f"MiB; the full costs {full_per_byte * MiB * 1000:.2f} ms per MiB read: {per_byte / full_per_byte:.2f}x "
            "(target <= 1.1x)"
        )
        print(
            f"full: read {full.bytes_transferred / MiB:.0f} MiB for {allocated / MiB:.0f} MiB allocated "
            f"({full.bytes_transferred / allocated:.2f}x), stored {full.bytes_stored / MiB:.0f} MiB; "
            f"ovirt-img stored {peer.stat().st_blocks * 512 / MiB:.0f} MiB"
        )
        for (changed, _), percent in zip(incrementals, (1, 4, 8), strict=True):
            inc = points[f"inc{percent}"]
            print(
                f"incremental ({percent}%): read {inc.bytes_transferred / MiB:.0f} MiB, stored "
                f"{inc.bytes_stored / MiB:.0f} MiB for {changed / MiB:.0f} MiB changed"
            )
        for label, point in [("full", full)] + [(f"incremental ({p}%)", points[f"inc{p}"]) for p in (1, 4, 8)]:
            events = list(point.job.events.order_by("pk"))
            start = events[0].time
            steps = "; ".join(f"+{(e.time - start).total_seconds():.2f}s {e.message[:40]}" for e in events)
            print(f"{label} job steps: {steps}")


if __name__ == "__main__":
    main()
