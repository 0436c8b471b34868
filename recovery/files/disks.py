"""A backup point's disks opened read-only on this node, their filesystems found and opened.

Why these means (docs/architecture.md says more): libguestfs, the field's tool, needs a kernel image
to boot its appliance and, without KVM, boots it under emulation; user-space drivers start in
milliseconds. So: the chain is served by one qemu-storage-daemon per session (every layer opened
read-only, backing nodes named explicitly, never taken from the image's own header) as a read-only
FUSE file per disk; partitions are read with sfdisk, signatures with blkid, a guest's LVM with the
LVM tools over a read-only loop device (no device-mapper here: an LV is read at its extents'
offset). ext2/3/4 are opened by fuse2fs and NTFS by ntfs-3g in user space; XFS and Btrfs, which have
no user-space driver here, by the kernel over a read-only loop device, `ro,nosuid,nodev,noexec` and
without journal/log replay; FAT by our own reader (recovery.files.fat; the kernel here has no vfat).
Nothing opened can write: the daemon's nodes and exports, the loop devices and the mounts are all
read-only.

Everything a session makes lives under its own directory (FILES_DIR/ID): its daemon's FUSE files,
its mountpoints, its LVM configuration. Closing finds what to undo there (mounts, loop devices,
processes), not in a record that a killed process may not have written.
"""

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from recovery.files.errors import FilesError

SECTOR = 512
# What is read with which means (blkid's TYPE): see the module's docstring.
FUSE2FS = {"ext2", "ext3", "ext4"}
KERNEL_OPTIONS = {
    "xfs": "ro,norecovery,nouuid,nosuid,nodev,noexec",
    "btrfs": "ro,rescue=nologreplay,nosuid,nodev,noexec",
}
ENCRYPTED = {"crypto_LUKS": "LUKS", "BitLocker": "BitLocker"}
CONTAINERS = {"5", "f", "85"}  # MBR extended partitions: their logical partitions are listed themselves
COMMAND_TIMEOUT = 60
# fuse2fs's own defaults (which no_default_opts leaves out: the others are given here) set
# attr_timeout=0, so the kernel asks again for an entry's attributes at every stat, and fuse2fs answers
# each ask, as each name lookup, by walking the folder from its first block (libext2fs does not use
# the ext4 htree index): two walks per entry listed, 2.4 s for a page of 200 in a folder of 100,000.
# Nothing changes under a backup's read-only filesystem, so the kernel may keep names and attributes
# (and the files' pages: kernel_cache) for as long as it likes: one walk per entry, none when seen again.
FUSE2FS_OPTIONS = (
    "ro,norecovery,nosuid,nodev,noexec,no_default_opts,kernel_cache,subtype=ext4,use_ino,"
    "attr_timeout=86400,entry_timeout=86400,negative_timeout=86400"
)


@dataclass(frozen=True)
class DiskChain:
    """One disk of a point: its layers oldest first, each (path, "qcow2" | "raw")."""

    disk_id: str
    alias: str
    layers: list[tuple[Path, str]]
    virtual_size: int


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env=(os.environ | env) if env else None,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise FilesError(f"{args[0]} is not installed on this node (make system-deps installs it).") from None
    except subprocess.TimeoutExpired:
        raise FilesError(f"{args[0]} did not answer within {COMMAND_TIMEOUT} s.") from None
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise FilesError(f"{Path(args[0]).name} failed: {said[-1] if said else f'exit status {done.returncode}'}")
    return done


# ----- the chain's daemon ---------------------------------------------------------------------


def image_of(workdir: Path, n: int) -> Path:
    return workdir / f"disk{n}.img"


def start_daemon(workdir: Path, chains: list[DiskChain]) -> int:
    """Serve each disk's chain as the read-only file disk<N>.img; returns the daemon's pid."""
    args = ["qemu-storage-daemon", "--daemonize", "--pidfile", str(workdir / "qsd.pid")]
    for n, chain in enumerate(chains):
        below = None
        for m, (path, fmt) in enumerate(chain.layers):
            file_node, node = f"d{n}f{m}", f"d{n}l{m}"
            args += [
                "--blockdev",
                json.dumps({"driver": "file", "node-name": file_node, "filename": str(path), "read-only": True}),
            ]
            spec = {"driver": fmt, "node-name": node, "file": file_node, "read-only": True}
            if fmt == "qcow2":
                spec["backing"] = below  # named here, never taken from the image's header
            args += ["--blockdev", json.dumps(spec)]
            below = node
        image = image_of(workdir, n)
        image.touch()
        args += ["--export", f"type=fuse,id=e{n},node-name={below},mountpoint={image},writable=off"]
    run(*args)
    return int((workdir / "qsd.pid").read_text().strip())


# ----- what a disk holds ----------------------------------------------------------------------


def probe(image: Path, offset: int, size: int) -> dict[str, str]:
    """blkid's low-level probe of a region of the disk: TYPE, LABEL, UUID, PTTYPE... ({} for none)."""
    done = run("blkid", "-p", "-o", "export", "-O", str(offset), "-S", str(size), str(image), check=False)
    if done.returncode not in (0, 2):
        raise FilesError(f"blkid could not read the disk: {done.stderr.strip() or done.returncode}")
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key] = value
    return found


def partitions(image: Path) -> tuple[str, list[dict]]:
    """The partition table's kind ("gpt", "dos", or "" for none) and its partitions."""
    done = run("sfdisk", "--json", str(image), check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return "", []
    table = json.loads(done.stdout)["partitiontable"]
    sector = table.get("sectorsize", SECTOR)
    found = []
    for part in table.get("partitions", []):
        if table["label"] == "dos" and part.get("type", "").lower() in CONTAINERS:
            continue
        number = int("".join(c for c in part["node"][len(str(image)) :] if c.isdigit()) or 0)
        found.append(
            {
                "key": f"p{number}",
                "where": f"partition {number}",
                "offset": part["start"] * sector,
                "size": part["size"] * sector,
                "part_type": part.get("type", ""),
                "part_name": part.get("name", ""),
            }
        )
    return table["label"], found


def find_filesystems(workdir: Path, image: Path, size: int) -> tuple[list[dict], str]:
    """What can be browsed on the disk: each filesystem (a partition's, an LV's, the whole disk's),
    with its type, label and, for one that cannot be opened, its problem. The second value says
    what the disk holds when nothing was found on it."""
    label, parts = partitions(image)
    if not parts:
        whole = probe(image, 0, size)
        if not whole.get("TYPE"):
            what = (
                f"a {whole['PTTYPE']} partition table with no partitions"
                if whole.get("PTTYPE")
                else "no partition table"
            )
            return [], f"holds {what} and no filesystem on the whole disk that this product recognizes"
        parts = [{"key": "disk", "where": "the whole disk (no partition table)", "offset": 0, "size": size}]
    found = []
    for part in parts:
        signature = probe(image, part["offset"], part["size"])
        if signature.get("TYPE") == "LVM2_member":
            found += logical_volumes(workdir, image, part)
        else:
            found.append(described(part, signature))
    return found, ""


def described(region: dict, signature: dict) -> dict:
    fs_type = signature.get("TYPE", "")
    fs = region | {"type": fs_type, "label": signature.get("LABEL", ""), "uuid": signature.get("UUID", "")}
    if fs_type in ENCRYPTED:
        fs["problem"] = (
            f"is encrypted ({ENCRYPTED[fs_type]}): its files cannot be read without the key. Restore the disk "
            "and open it in a VM that has the key."
        )
    elif fs_type == "swap":
        fs["problem"] = "is swap space: it holds no files."
    elif not fs_type:
        fs["problem"] = "holds no filesystem this product recognizes (unknown or damaged)."
    elif fs_type not in FUSE2FS | set(KERNEL_OPTIONS) | {"ntfs", "vfat"}:
        fs["problem"] = (
            f"holds {fs_type}, which this product cannot open (it reads ext2/3/4, XFS, Btrfs, FAT and NTFS)."
        )
    return fs


def lvm_env(workdir: Path, loop: str) -> dict:
    """LVM that sees this one loop device only, never writes (metadata backups, archives, locks,
    activation) and asks no daemon."""
    conf = workdir / "lvm"
    conf.mkdir(exist_ok=True)
    (conf / "lvm.conf").write_text(
        f'devices {{ filter=["a|^{loop}$|","r|.*|"] use_devicesfile=0 obtain_device_list_from_udev=0 }}\n'
        "global { activation=0 use_lvmpolld=0 }\n"
        "activation { udev_sync=0 udev_rules=0 monitoring=0 }\n"
        "backup { backup=0 archive=0 }\n"
    )
    return {"LVM_SYSTEM_DIR": str(conf), "LVM_SUPPRESS_FD_WARNINGS": "1"}


def lvm_report(env: dict, command: str, fields: str, *args: str, rows: str) -> list[dict]:
    """The rows of an LVM report (pvs, lvs) as JSON, sizes in bytes, read without writing anything."""
    done = run(
        command, "--readonly", *args, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields, env=env
    )
    return json.loads(done.stdout)["report"][0][rows]


def logical_volumes(workdir: Path, image: Path, part: dict) -> list[dict]:
    """The LVs of a guest's volume group on a partition, each read where its extents lie."""
    loop = attach_loop(image, part["offset"], part["size"])
    try:
        env = lvm_env(workdir, loop)
        pvs = lvm_report(env, "pvs", "pv_name,vg_name,pe_start", rows="pv")
        segs = lvm_report(
            env, "lvs", "vg_name,lv_name,segtype,seg_size_pe,seg_pe_ranges,vg_extent_size", "--segments", rows="seg"
        )
    except (FilesError, ValueError, KeyError, IndexError) as e:
        return [
            part
            | {
                "type": "LVM2_member",
                "label": "",
                "problem": f"is an LVM physical volume whose metadata cannot be read: {e}",
            }
        ]
    finally:
        detach_loop(loop)
    pe_start = next((int(pv["pe_start"]) for pv in pvs if pv["pv_name"] == loop), 0)
    by_lv: dict[tuple[str, str], list[dict]] = {}
    for seg in segs:
        by_lv.setdefault((seg["vg_name"], seg["lv_name"]), []).append(seg)
    found = []
    for (vg, lv), lv_segs in sorted(by_lv.items()):
        region = {"key": f"{vg}-{lv}", "where": f"logical volume {lv} of volume group {vg} ({part['where']})"}
        seg = lv_segs[0]
        ranges = seg["seg_pe_ranges"].split()
        # A VG may span the guest's disks: an LV whose extents lie on another disk's PV is not here.
        devices = {r.rsplit(":", 1)[0] for s in lv_segs for r in s["seg_pe_ranges"].split()}
        problem = ""
        if devices and loop not in devices:
            problem = "lies on another disk's physical volume: browse it on that disk."
        elif len(lv_segs) > 1 or seg["segtype"] != "linear" or len(ranges) != 1 or devices != {loop}:
            problem = (
                f"is a {seg['segtype']} LV of {len(lv_segs)} segments: only single-segment linear LVs on one "
                "disk can be read here."
            )
        if problem:
            found.append(region | {"offset": 0, "size": 0, "type": "", "label": "", "problem": problem})
            continue
        first = int(ranges[0].rsplit(":", 1)[1].split("-")[0])
        extent = int(seg["vg_extent_size"])
        region |= {"offset": part["offset"] + pe_start + first * extent, "size": int(seg["seg_size_pe"]) * extent}
        found.append(described(region, probe(image, region["offset"], region["size"])))
    return found


# ----- opening a filesystem --------------------------------------------------------------------


def attach_loop(image: Path, offset: int, size: int) -> str:
    return run(
        "losetup", "-f", "--show", "-r", "--offset", str(offset), "--sizelimit", str(size), str(image)
    ).stdout.strip()


def detach_loop(loop: str) -> None:
    run("losetup", "-d", loop, check=False)


def mount(workdir: Path, image: Path, n: int, fs: dict) -> dict:
    """Open the filesystem for reading; what it became: {"mount": path} or {"fat": True}, with its
    size and use, or {"problem": why} when it cannot be opened (a damaged filesystem)."""
    if fs["type"] == "vfat":
        from recovery.files.fat import FatError, FatVolume

        try:
            with FatVolume(image, offset=fs["offset"], size=fs["size"]) as volume:
                return {"fat": True, "bytes": volume.total_bytes, "used": volume.total_bytes - volume.free_bytes}
        except FatError as e:
            return {"problem": f"cannot be opened, it may be damaged: {e}"}
    point = workdir / "mnt" / f"{n}-{fs['key']}"
    point.mkdir(parents=True, exist_ok=True)
    try:
        if fs["type"] in FUSE2FS:
            options = f"{FUSE2FS_OPTIONS},fsname={image},offset={fs['offset']}"
            run("fuse2fs", str(image), str(point), "-o", options)
        else:
            loop = attach_loop(image, fs["offset"], fs["size"])
            try:
                if fs["type"] == "ntfs":
                    run("ntfs-3g", "-o", "ro,nosuid,nodev,noexec", loop, str(point))
                else:
                    run("mount", "-t", fs["type"], "-o", KERNEL_OPTIONS[fs["type"]], loop, str(point))
            finally:
                # A mounted loop device stays until its mount goes (autoclear); one that failed goes now.
                run("losetup", "-d", loop, check=False)
    except FilesError as e:
        return {"problem": f"cannot be opened, it may be damaged: {e}"}
    usage = os.statvfs(point)
    return {
        "mount": str(point),
        "bytes": usage.f_blocks * usage.f_frsize,
        "used": (usage.f_blocks - usage.f_bfree) * usage.f_frsize,
    }


# ----- closing ------------------------------------------------------------------------------------


def mounts_under(workdir: Path, *, fstype: str = "") -> list[str]:
    """Mountpoints under the directory, deepest first (of that filesystem type only, if given)."""
    prefix = str(workdir) + os.sep
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        # mountinfo escapes space, tab, newline and backslash as octal (\040); nothing else.
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        if mountpoint.startswith(prefix) and (not fstype or fields[fields.index("-") + 1] == fstype):
            found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def loops_over(workdir: Path) -> list[str]:
    done = run("losetup", "-J", "-l", "-O", "NAME,BACK-FILE", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    prefix = str(workdir) + os.sep
    return [
        d["name"]
        for d in json.loads(done.stdout).get("loopdevices", [])
        if (d.get("back-file") or "").startswith(prefix)
    ]


# The programs a session starts that serve its files: only these are ever stopped when it closes.
SESSION_PROGRAMS = {"qemu-storage-daemon", "fuse2fs", "ntfs-3g"}


def processes_under(workdir: Path) -> list[int]:
    """This node's processes of the session's own programs (SESSION_PROGRAMS) with an argument in the
    session's directory: its chain daemon, fuse2fs, ntfs-3g. Nothing else that merely names it."""
    inside = str(workdir) + os.sep
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            program = Path(os.readlink(proc / "exe")).name.removesuffix(" (deleted)")
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if program in SESSION_PROGRAMS and any(
            a.startswith(inside) or f"={inside}" in a or f",{inside}" in a for a in args[1:]
        ):
            found.append(int(proc.name))
    return found


def close_workdir(workdir: Path) -> None:
    """Undo everything a session made under `workdir`, whoever made it: the filesystems' mounts, the
    loop devices, the processes (the chain's daemon last: the others read through it), the files."""
    workdir = Path(workdir)
    if not workdir.exists():
        return
    images = {str(p) for p in workdir.glob("disk*.img")}
    btrfs = bool(mounts_under(workdir, fstype="btrfs"))
    for mountpoint in mounts_under(workdir):
        if mountpoint in images:
            continue  # the daemon's own exports go with it
        if run("umount", mountpoint, check=False).returncode != 0:
            run("umount", "-l", mountpoint, check=False)
    if btrfs:
        # The kernel keeps every Btrfs device it has seen registered after its unmount: forget them
        # (only the unmounted ones go), else the guest's filesystem UUID stays known on this machine.
        run("btrfs", "device", "scan", "--forget", check=False)
    for loop in loops_over(workdir):
        detach_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_under(workdir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.02)
        if not pids:
            break
    for mountpoint in mounts_under(workdir):  # a daemon killed hard leaves its FUSE exports mounted
        run("umount", "-l", mountpoint, check=False)
    _remove_tree(workdir)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _remove_tree(workdir: Path) -> None:
    """Remove the directory without descending into anything still mounted (never delete through a
    mount: it would be the guest's files, or worse, if an unmount failed)."""
    if mounts_under(workdir):
        raise FilesError(f"{workdir} still has filesystems mounted: {', '.join(mounts_under(workdir))}.")
    for root, dirs, files in os.walk(workdir, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            path = os.path.join(root, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)
    os.rmdir(workdir)
