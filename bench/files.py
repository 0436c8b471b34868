"""File-level restore: browsing a backup's files against reading the same filesystem by hand, in one run.

    .venv/bin/python bench/files.py [--files 100000] [--file-mib 1024] [--runs 3] [--warm]

1. Browse to the first listing: the demo VM web01 backed up through the product, then the time from
   opening its point (recovery.files.sessions.open_session) to the listing of "/" (the boot disk's
   filesystems) and of the root folder of its ext4 filesystem. Goal: under 5 s. Peer: what an
   administrator does without the product, `qemu-img convert` of the point's disk to RAW, fuse2fs,
   `ls -l` of the root.
2. A folder of --files empty files on a guest ext4 filesystem (on a disk added to a new VM through
   the engine's API, written into it as the guest writes, backed up through the product): the first
   page (cold: the folder read once), the next pages, the last page and a search, against
   `os.listdir` of the same folder on the session's mount (`ls -f | wc -l`: the read the product
   cannot avoid) and `ls -l` of one page's names. Goal: under 1 s per page.
3. A file of --file-mib MiB of random data on the same filesystem, downloaded
   (recovery.files.browse.download's chunks written to a file) against `cp` of it from the
   session's mount, --runs times each taking turns; the ratio is the median of each download's
   against the cp just before it. Every copy is compared with the file the guest wrote. Goal: at
   least 0.8x cp's speed.

The page cache is dropped before each cold figure when this process may (root) and --warm is not
given. Every session the bench opens is closed and nothing stays mounted under its workspace.

Why the folder is filled through the kernel: `mkfs.ext4 -d` of a folder of 100,000 files takes
12 minutes here (e2fsprogs 1.47.0 links each entry by scanning the whole unindexed directory, and
looks the name up first the same way: quadratic), and debugfs, on an indexed directory, 17 s for
20,000 entries.
So `mkfs.ext4 -d` writes the filesystem with the big file and an empty folder, and the folder is
filled through a read-write kernel mount of the image on a loop device, as a Linux guest fills
one: about 5 s, and the directory is hashed (htree) as a guest's would be.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import checks
from backup import MiB, drop_caches, timed
from workspace import demo_vm, open_workspace, run_or_exit

BENCH = "files"
FOLDER = "many"
BIG = "big.bin"
WRITE_CHUNK = 16 * MiB  # what one guest write (a control request of the simulator) carries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000, help="entries of the folder listed")
    parser.add_argument("--file-mib", type=int, default=1024, help="size of the file downloaded")
    parser.add_argument("--per-page", type=int, default=200, help="entries of a page (the pages' default)")
    parser.add_argument("--runs", type=int, default=3, help="downloads and copies of the file, taking turns")
    parser.add_argument("--warm", action="store_true", help="keep the page cache (backup.timed reads it)")
    args = parser.parse_args()
    if args.files < 2 * args.per_page or args.file_mib < 1 or args.runs < 1:
        parser.error(f"--files must be at least two pages ({2 * args.per_page}), --file-mib and --runs at least 1")
    work = open_workspace("bench-files-")
    from recovery.models import FileSession

    with demo_vm(work, "web01") as (sim, vm, destination):
        try:
            first = browse_to_first_listing(work, vm, destination)
            point, source = guest_folder_and_file(work, sim, vm, destination, args.files, args.file_mib * MiB)
            listing = folder_pages(point, args.files, args.per_page)
            download = big_file(work, point, source, args.runs, warm=args.warm)
        finally:
            for session in FileSession.objects.open():
                close_and_check(session)
        # What the bench and its sessions made (the simulator's running VMs and block domain have their own).
        engine = str(work / "engine") + os.sep
        left = [m for m in mounted_under(work) if not m.startswith(engine)]
        left += [
            f"loop device {loop}"
            for loop, back in loops()
            if back.startswith(f"{work}/") and not back.startswith(engine)
        ]
        if left:
            checks.impossible(f"left behind: {', '.join(left)}")

    cold, warm, last, search, peer_list, peer_page = listing
    ours, peer, speed = download
    size = args.file_mib * MiB
    print()
    print(f"browse to the first listing: {first:.2f}s (goal: under 5 s: {verdict(first < 5)})")
    print(
        f"folder of {args.files:,} files, pages of {args.per_page}: first (cold) {cold:.2f}s, next {warm:.3f}s, "
        f"last {last:.3f}s, search {search:.3f}s (goal: under 1 s per page: {verdict(max(cold, warm, last) < 1)}); "
        f"os.listdir {peer_list:.2f}s, ls -l of a page {peer_page:.3f}s"
    )
    print(
        f"{args.file_mib} MiB file: download {size / MiB / ours:.0f} MiB/s, cp {size / MiB / peer:.0f} MiB/s "
        f"(medians); the download at {speed:.2f}x the speed of the cp before it (median of {args.runs}; goal: at "
        f"least 0.8x: {verdict(speed >= 0.8)})"
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# ----- 1. browse to the first listing -----------------------------------------------------------------


def browse_to_first_listing(work: Path, vm, destination) -> float:
    from recovery.files.browse import list_place
    from recovery.files.sessions import disk_chains, open_session
    from repository.models import BackupPoint
    from strategies.backup import request_backup

    job = run_or_exit(request_backup(vm=vm, origin="cli", destination=destination, type="full"))
    point = BackupPoint.objects.get(pk=job.result["point"])
    print(f"1. {vm.name}: backup {point.pk} ({point.type}, {point.bytes_stored / MiB:.1f} MiB stored)")
    cold = drop_caches()
    started = time.perf_counter()
    session = open_session(point=point, who="bench", origin="cli")
    try:
        opened = time.perf_counter()
        _, filesystems = list_place(session, disk=None, path="/")
        listed_disk = time.perf_counter()
        fs = next((f for f in filesystems if f["type"] == "ext4" and not f.get("problem")), None)
        if fs is None:
            found = ", ".join(f"{f['key']} ({f['type'] or 'unknown'})" for f in filesystems) or "nothing"
            checks.impossible(f"the boot disk of {vm.name} holds no ext4 filesystem to list (it holds {found})")
        _, root = list_place(session, disk=None, path=f"/{fs['key']}")
        done = time.perf_counter()
    finally:
        close_and_check(session)
    checks.positive(f"the entries of the root of {fs['key']}", root.total)
    total = checks.positive("the time from browse to the first listing", done - started)
    note = "" if cold else " (page cache not dropped)"
    print(f"  open the point (chain daemon, partitions, filesystems, mounts): {opened - started:.2f}s{note}")
    print(f"  list / (the boot disk's {len(filesystems)} filesystems): {listed_disk - opened:.3f}s")
    print(f"  list /{fs['key']} ({fs['type']}, {root.total} entries): {done - listed_disk:.3f}s")
    print(f"  browse to the first listing: {total:.2f}s (goal: under 5 s)")

    (layer, fmt), *_ = reversed(disk_chains(point)[0].layers)
    raw, mnt = work / "by-hand.raw", work / "by-hand"
    mnt.mkdir()

    def by_hand():
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(layer), str(raw)], check=True)
        run("fuse2fs", str(raw), str(mnt), "-o", f"ro,offset={fs['offset']}")
        subprocess.run(["ls", "-l", str(mnt)], check=True, stdout=subprocess.DEVNULL)

    try:
        peer = timed("by hand: qemu-img convert to RAW, fuse2fs, ls -l of the root", by_hand)
    finally:
        unmount(mnt)
        raw.unlink(missing_ok=True)
    checks.record(BENCH, "browse to the first listing", total, goal="< 5", unit="s")
    checks.ratio(BENCH, "browse to the first listing / by hand", total, peer)
    return total


# ----- the guest's filesystem ---------------------------------------------------------------------------


def guest_folder_and_file(work: Path, sim, vm, destination, files: int, size: int):
    """A new VM whose disk holds an ext4 filesystem with the folder and the file, backed up: (point,
    the file as the guest wrote it)."""
    import ovirtsdk4.types as types

    from inventory.models import VM
    from inventory.sync import sync_manager
    from repository.models import BackupPoint
    from strategies.backup import request_backup
    from tests.ovirtsim.helpers import add_disk

    started = time.perf_counter()
    image, source = guest_filesystem(work, files, size)
    made = time.perf_counter()
    with sim.connect() as conn:
        vms = conn.system_service().vms_service()
        engine_vm = vms.add(types.Vm(name="files01", cluster=types.Cluster(name="Production")))
        disk = add_disk(conn, name="files01_data", size=image.stat().st_size, sd_name="data-nfs")
        vms.vm_service(engine_vm.id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=True, active=True
            )
        )
    written = write_as_guest(sim, disk.id, image)
    image.unlink()
    checks.at_least("the bytes the guest wrote", written, "the file's size", size)
    sync_manager(vm.manager)
    files_vm = VM.objects.get(manager=vm.manager, name="files01")
    wrote = time.perf_counter()
    job = run_or_exit(request_backup(vm=files_vm, origin="cli", destination=destination, type="full"))
    point = BackupPoint.objects.get(pk=job.result["point"])
    checks.at_least("the bytes the backup stored", point.bytes_stored, "the file's size", size)
    print(
        f"2, 3. {files_vm.name}: ext4 with {files:,} files in /{FOLDER} and a {size / MiB:.0f} MiB file made in "
        f"{made - started:.1f}s, written by the guest ({written / MiB:.0f} MiB) in {wrote - made:.1f}s, "
        f"backup {point.pk} in {time.perf_counter() - wrote:.1f}s ({point.bytes_stored / MiB:.0f} MiB stored)"
    )
    return point, source


def guest_filesystem(work: Path, files: int, size: int) -> tuple[Path, Path]:
    """An ext4 image holding /big.bin (`size` random bytes) and /many with `files` empty files
    (see the module's docstring for how), and the big file's source."""
    root = work / "guest-root"
    (root / FOLDER).mkdir(parents=True)
    source = root / BIG
    with open(source, "wb") as f:
        for at in range(0, size, WRITE_CHUNK):
            f.write(os.urandom(min(WRITE_CHUNK, size - at)))
    image = work / "guest-fs.raw"
    # Room for the file, the inode tables, the folder's blocks and the journal (64 MiB at 1 GiB).
    image_size = -(-(size + size // 16 + files * 512 + 128 * MiB) // MiB) * MiB
    with open(image, "wb") as f:
        f.truncate(image_size)
    run("mkfs.ext4", "-q", "-F", "-L", "files01", "-N", str(files + 1024), "-d", str(root), str(image))
    loop = run("losetup", "-f", "--show", str(image)).strip()
    try:
        mnt = work / "guest-mount"
        mnt.mkdir()
        run("mount", "-t", "ext4", "-o", "nosuid,nodev,noexec", loop, str(mnt))
        try:
            folder = os.open(mnt / FOLDER, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for n in range(files):
                    os.close(os.open(name(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=folder))
            finally:
                os.close(folder)
        finally:
            unmount(mnt)
    finally:
        run("losetup", "-d", loop)
    # What the guest wrote is in the image, and its journal holds nothing more (fuse2fs replays none).
    header = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in run("dumpe2fs", "-h", str(image)).splitlines())
    )
    checks.equal("the state of the guest's filesystem once unmounted", header.get("Filesystem state"), "clean")
    if "needs_recovery" in header.get("Filesystem features", ""):
        checks.impossible("the guest's filesystem needs its journal replayed once unmounted")
    used = int(header["Inode count"]) - int(header["Free inodes"])
    checks.at_least("the inodes the guest's filesystem uses", used, "the files made", files)
    return image, source


def name(n: int) -> str:
    return f"file{n:06d}"


def write_as_guest(sim, disk_id: str, image: Path) -> int:
    """The image's data ranges written into the disk as the guest writes (its holes stay unwritten)."""
    written = 0
    with open(image, "rb") as f:
        fd, pos, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            for at in range(start, pos, WRITE_CHUNK):
                data = os.pread(fd, min(WRITE_CHUNK, pos - at), at)
                sim.guest_write(disk_id, at, data)
                written += len(data)
    return written


# ----- 2. a folder of many files ------------------------------------------------------------------------


def folder_pages(point, files: int, per_page: int) -> tuple[float, ...]:
    from recovery.files.browse import list_place
    from recovery.files.sessions import open_session

    session = open_session(point=point, who="bench", origin="cli")
    fs = next(f for f in session.disks[0]["filesystems"] if f["type"] == "ext4")
    path = f"/{fs['key']}/{FOLDER}"
    folder = Path(fs["mount"]) / FOLDER
    pages = -(-files // per_page)
    print(f"2. /{FOLDER} of backup {point.pk}: {files:,} files, {pages} pages of {per_page}")

    def page(number: int, search: str = ""):
        return list_place(session, disk=None, path=path, page=number, per_page=per_page, search=search)[1]

    got = {}
    peer_list = timed(
        "os.listdir of the folder on the session's mount (ls -f | wc -l)",
        lambda: got.setdefault("names", os.listdir(folder)),
    )
    checks.equal("the names os.listdir read", len(got["names"]), files)
    cold = timed("our first page (the folder read once)", lambda: got.setdefault(1, page(1)))
    first = got[1]
    checks.equal("the folder's entries as listed", first.total, files)
    checks.equal("the first page's names", [e.name for e in first.entries], [name(n) for n in range(per_page)])
    nexts = []
    for number in range(2, min(pages, 7)):
        started = time.perf_counter()
        listed = page(number)
        nexts.append(checks.positive(f"the time of page {number}", time.perf_counter() - started))
        checks.equal(f"page {number}'s first name", listed.entries[0].name, name((number - 1) * per_page))
        checks.equal(f"page {number}'s entries", len(listed.entries), per_page)
    warm = sum(nexts) / len(nexts)
    print(f"  our next pages (2 to {len(nexts) + 1}): {warm:.3f}s each on average, {max(nexts):.3f}s at most")
    started = time.perf_counter()
    last = page(pages)
    t_last = checks.positive("the time of the last page", time.perf_counter() - started)
    checks.equal("the last page's entries", len(last.entries), files - (pages - 1) * per_page)
    checks.equal("the last page's last name", last.entries[-1].name, name(files - 1))
    print(f"  our last page ({pages}): {t_last:.3f}s")
    term = name(files // 2)[:-2]  # a hundred names from the middle (of 100,000: none listed yet)
    started = time.perf_counter()
    found = page(1, term)
    t_search = checks.positive("the time of the search", time.perf_counter() - started)
    checks.equal(f"the entries found by {term!r}", found.total, sum(term in name(n) for n in range(files)))
    print(f"  our search for {term!r} ({found.total} found): {t_search:.3f}s")
    unread = [name(n) for n in range(7 * per_page, 8 * per_page)] if pages > 8 else [name(files - 1)]
    peer_page = timed(
        f"ls -l of {len(unread)} entries (never listed) on the session's mount",
        lambda: subprocess.run(["ls", "-l", "--", *unread], cwd=folder, check=True, stdout=subprocess.DEVNULL),
    )
    checks.record(BENCH, "first page of the folder (cold)", cold, goal="< 1", unit="s")
    checks.record(BENCH, "next page of the folder", warm, goal="< 1", unit="s")
    checks.record(BENCH, "last page of the folder", t_last, goal="< 1", unit="s")
    checks.record(BENCH, "search of the folder", t_search, goal="< 1", unit="s")
    checks.ratio(BENCH, "first page / os.listdir of the folder", cold, peer_list)
    checks.ratio(BENCH, "next page / ls -l of a page", warm, peer_page)
    return cold, warm, t_last, t_search, peer_list, peer_page


# ----- 3. a big file ----------------------------------------------------------------------------------


def big_file(work: Path, point, source: Path, runs: int, *, warm: bool) -> tuple[float, float, float]:
    """The medians of `runs` downloads and `runs` copies by cp, taking turns (this machine is shared:
    one run of each can fall on another's busy second)."""
    from recovery.files.browse import download
    from recovery.models import FileSession

    session = FileSession.objects.open().get(point=point)  # the folder's, still open
    fs = next(f for f in session.disks[0]["filesystems"] if f["type"] == "ext4")
    size = source.stat().st_size
    print(f"3. /{BIG} of backup {point.pk}: {size / MiB:.0f} MiB, {runs} run(s) each, taking turns")
    peer_copy, our_copy = work / "cp.bin", work / "download.bin"

    def ours():
        got = download(session, disk=None, path=f"/{fs['key']}/{BIG}")
        checks.equal("the size the download announces", got.size, size)
        with open(our_copy, "wb") as out:
            for chunk in got.chunks:
                out.write(chunk)

    if warm:  # the page cache kept: both read from it, not only the one that comes second
        subprocess.run(["cat", str(Path(fs["mount"]) / BIG)], check=True, stdout=subprocess.DEVNULL)
    peers, downloads = [], []
    for _ in range(runs):
        peer_copy.unlink(missing_ok=True)
        our_copy.unlink(missing_ok=True)
        peers.append(
            timed(
                "cp of the file from the session's mount",
                lambda: subprocess.run(["cp", str(Path(fs["mount"]) / BIG), str(peer_copy)], check=True),
            )
        )
        downloads.append(timed("our download (browse.download's chunks into a file)", ours))
        checks.equal("the bytes downloaded", our_copy.stat().st_size, size)
        checks.same_bytes("the downloaded file against the guest's", source, our_copy)
        checks.same_bytes("cp's copy against the guest's", source, peer_copy)
    t_ours, peer = statistics.median(downloads), statistics.median(peers)
    # Each download against the cp just before it (the machine's other work changes between turns).
    speed = statistics.median(
        checks.positive("cp's time / the download's", p / o) for p, o in zip(peers, downloads, strict=True)
    )
    print(
        f"  medians: download {size / MiB / t_ours:.0f} MiB/s, cp {size / MiB / peer:.0f} MiB/s; "
        f"download / cp just before it: {speed:.2f}x"
    )
    checks.record(BENCH, "download speed / cp's (median of turns)", speed, goal=">= 0.8")
    return t_ours, peer, speed


# ----- helpers -----------------------------------------------------------------------------------------


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def unmount(mnt: Path) -> None:
    if str(mnt) in mounted_under(mnt.parent):
        run("umount", str(mnt))
        deadline = time.monotonic() + 10  # a FUSE driver may take a moment to let go
        while str(mnt) in mounted_under(mnt.parent):
            if time.monotonic() > deadline:
                raise SystemExit(f"{mnt} is still mounted 10 s after umount")
            time.sleep(0.05)


def mounted_under(directory: Path) -> list[str]:
    prefix = str(directory) + os.sep
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


def loops() -> list[tuple[str, str]]:
    """Every loop device of the machine and its backing file."""
    found = json.loads(run("losetup", "-J", "-l", "-O", "NAME,BACK-FILE") or "{}")
    return [(d["name"], d.get("back-file") or "") for d in found.get("loopdevices", [])]


def close_and_check(session) -> None:
    from recovery.files.sessions import close_session

    close_session(session, reason="bench over")
    left = mounted_under(Path(session.workdir)) if session.workdir else []
    if left or (session.workdir and Path(session.workdir).exists()):
        checks.impossible(f"browsing session {session.pk} left {', '.join(left) or session.workdir} behind")


if __name__ == "__main__":
    main()
