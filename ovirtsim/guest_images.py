"""Guest disk images with real partition tables, LVM and filesystems, made from guest_files' layouts.

User-space tools only, no kernel mount: `sfdisk` writes the partition table into the image file,
each filesystem is made in a file of its own and copied into place (its data only, the image stays
sparse): ext4 with `mkfs.ext4 -d`, XFS with `mkfs.xfs -p PROTOFILE` (times set with `xfs_db -x`),
vfat with `mkfs.vfat` and mtools, Btrfs with `mkfs.btrfs --rootdir`, NTFS with `mkntfs` and the
user-space ntfs-3g driver (FUSE: the only tool that makes NTFS directories). A guest's LVM is real
LVM metadata, written by LVM on a loop device over the partition's file with a configuration that
sees that device only; each LV's filesystem is then written at the LV's extents (pe_start +
first extent * extent size), where a guest's device-mapper would map it.

`partitions`, `logical_volumes` and `write_ext4_file` read and change such a disk in place (a regular
file or a running VM's disk exported as one): what `Simulator.guest_write_file` does as the guest.
"""

import contextlib
import json
import os
import posixpath
import re
import subprocess
import tempfile
import time
from pathlib import Path

from ovirtsim import guest_files
from ovirtsim.guest_files import Filesystem, Layout, VolumeGroup

PACKAGES = {
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_db": "xfsprogs",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "mkntfs": "ntfs-3g",
    "ntfs-3g": "ntfs-3g",
    "mkfs.btrfs": "btrfs-progs",
    "vgcreate": "lvm2",
    "lvcreate": "lvm2",
    "pvs": "lvm2",
    "losetup": "util-linux",
    "blkid": "util-linux",
}
# mkfs.xfs refuses filesystems under 300 MiB unless it believes it runs in xfstests.
SMALL_XFS = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}


class GuestImageError(RuntimeError):
    pass


def _run(*args: str, env: dict | None = None, input: str | None = None) -> str:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, env=None if env is None else os.environ | env, input=input, timeout=60
        )
    except FileNotFoundError:
        raise GuestImageError(f"{args[0]} is not installed (Debian package {PACKAGES.get(args[0], '?')})") from None
    if result.returncode != 0:
        raise GuestImageError(f"{args[0]} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _sized_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _place(src: Path, dst: Path, offset: int) -> None:
    """Copy `src` into `dst` at `offset`, its data ranges only (holes stay holes in both)."""
    with open(src, "rb") as s, open(dst, "r+b") as d:
        size, pos = os.fstat(s.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(s.fileno(), start, os.SEEK_HOLE)
            while start < end:
                copied = os.copy_file_range(s.fileno(), d.fileno(), end - start, start, offset + start)
                if copied <= 0:
                    raise GuestImageError(f"{src.name} shrank while being copied")
                start += copied
            pos = end


# ----- building ------------------------------------------------------------------------


def build_disk(name: str, size: int, path: Path) -> None:
    """The demo disk `name` (a key of guest_files.DISKS) as a RAW image of `size` bytes at `path`."""
    if name not in guest_files.DISKS:
        raise GuestImageError(f"no guest layout for disk {name} (known: {', '.join(guest_files.DISKS)})")
    layout = guest_files.DISKS[name]
    _sized_file(path, size)
    with tempfile.TemporaryDirectory(prefix="ovirtsim-guest-") as tmp:
        if layout.filesystem is not None:
            make_filesystem(layout.filesystem, path, Path(tmp))
            return
        _write_partition_table(layout, path)
        for key, (start, length, _) in partitions(path).items():
            part = layout.partitions[int(key[1:]) - 1]
            part_file = _sized_file(Path(tmp) / f"{key}.img", length)
            if isinstance(part.content, VolumeGroup):
                _volume_group(part.content, part_file, Path(tmp))
            else:
                make_filesystem(part.content, part_file, Path(tmp), hidden_sectors=start // 512)
            _place(part_file, path, start)
            part_file.unlink()


def _write_partition_table(layout: Layout, path: Path) -> None:
    lines = [f"label: {layout.table}", f"label-id: {layout.label_id}"]
    for part in layout.partitions:
        fields = [f"start={part.start // 512}"]
        if part.size is not None:
            fields.append(f"size={part.size // 512}")
        fields.append(f"type={part.type}")
        if part.uuid:
            fields.append(f"uuid={part.uuid}")
        if part.name:
            fields.append(f'name="{part.name}"')
        if part.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    _run("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path), input="\n".join(lines) + "\n")


def make_filesystem(fs: Filesystem, target: Path, tmp: Path, *, hidden_sectors: int = 0) -> None:
    """Make `fs` with its entries in the file `target` (its whole size)."""
    builders = {"ext4": _ext4, "xfs": _xfs, "vfat": _vfat, "ntfs": _ntfs, "btrfs": _btrfs}
    if fs.fstype not in builders:
        raise GuestImageError(f"cannot make a {fs.fstype} filesystem (ext4, xfs, vfat, ntfs or btrfs)")
    builders[fs.fstype](fs, target, tmp, hidden_sectors)


def _tree(fs: Filesystem, root: Path, *, owners: bool = True) -> Path:
    """The filesystem's entries as a directory tree under `root`, with their modes, owners and times
    (what mkfs.ext4 -d and mkfs.btrfs --rootdir copy)."""
    root.mkdir(parents=True)
    tree = fs.tree()
    for path, entry in tree.items():
        local = root / path.lstrip("/")
        if entry.kind == "dir":
            local.mkdir()
        elif entry.kind == "symlink":
            local.symlink_to(entry.target)
        else:
            local.write_bytes(entry.data)
        if owners:
            os.chown(local, entry.uid, entry.gid, follow_symlinks=False)
        if entry.kind != "symlink":
            os.chmod(local, entry.mode)
    # Deepest first: writing a directory's children changes its time.
    for path, entry in sorted(tree.items(), key=lambda item: -item[0].count("/")):
        os.utime(root / path.lstrip("/"), (entry.mtime, entry.mtime), follow_symlinks=False)
    os.utime(root, (guest_files.MTIME, guest_files.MTIME))
    return root


def _ext4(fs: Filesystem, target: Path, tmp: Path, hidden_sectors: int) -> None:
    root = _tree(fs, Path(tempfile.mkdtemp(dir=tmp)) / "root")
    _run("mkfs.ext4", "-q", "-F", "-L", fs.label, "-U", fs.uuid, "-E", "root_owner=0:0", "-d", str(root), str(target))


def _btrfs(fs: Filesystem, target: Path, tmp: Path, hidden_sectors: int) -> None:
    root = _tree(fs, Path(tempfile.mkdtemp(dir=tmp)) / "root")
    size = target.stat().st_size
    # Mixed block groups below 1 GiB, as btrfs advises: without them mkfs needs 109 MiB at least
    # and grows a regular file to that size.
    mixed = ["--mixed"] if size < 1024**3 else []
    # No fixed UUID: mkfs.btrfs refuses one the kernel knows, and the kernel knows every Btrfs it has
    # mounted on this machine since (a browsed backup of this very disk, another test's seed).
    _run("mkfs.btrfs", "-q", "-f", *mixed, "-L", fs.label, "--rootdir", str(root), str(target))
    if target.stat().st_size != size:
        raise GuestImageError(f"mkfs.btrfs grew {target.name} beyond {size} bytes")


def _xfs(fs: Filesystem, target: Path, tmp: Path, hidden_sectors: int) -> None:
    sources = Path(tempfile.mkdtemp(dir=tmp))
    tree = fs.tree()
    lines = ["ovirtsim", "0 0", "d--755 0 0"]  # a boot image name, ignored block and inode counts, the root
    depth = 0  # of the innermost directory open in the protofile (the root's is 0)
    for n, (path, entry) in enumerate(tree.items()):  # depth first: parents before their entries
        name = posixpath.basename(path)
        if re.search(r"\s", name):
            raise GuestImageError(f"XFS protofiles cannot name {path!r} (whitespace)")
        level = path.count("/")
        while depth >= level:  # close the directories this entry is not in
            lines.append("$")
            depth -= 1
        owner = f"{entry.uid} {entry.gid}"
        if entry.kind == "dir":
            lines.append(f"{name} d--{entry.mode:03o} {owner}")
            depth = level
        elif entry.kind == "symlink":
            lines.append(f"{name} l--777 {owner} {entry.target}")
        else:
            source = sources / str(n)
            source.write_bytes(entry.data)
            lines.append(f"{name} ---{entry.mode:03o} {owner} {source}")
    lines += ["$"] * (depth + 1)
    proto = sources / "protofile"
    proto.write_text("\n".join(lines) + "\n")
    _run(
        "mkfs.xfs", "-q", "-f", "-L", fs.label, "-m", f"uuid={fs.uuid},bigtime=1", "-p", str(proto), str(target),
        env=SMALL_XFS,
    )  # fmt: skip
    # The protofile cannot give times: set them in the inodes. With bigtime, xfs_db takes a
    # timestamp as nanoseconds since 1901-12-13 20:45:52 UTC (-2**31 s).
    commands = []
    for path, entry in {"/": guest_files.directory("/"), **tree}.items():
        stamp = (entry.mtime + 2**31) * 10**9
        commands += ["-c", f"path {path}"]
        for field in ("atime", "mtime", "ctime"):
            commands += ["-c", f"write core.{field}.sec {stamp}"]
    _run("xfs_db", "-x", *commands, str(target))


def _vfat(fs: Filesystem, target: Path, tmp: Path, hidden_sectors: int) -> None:
    # FAT16 with 512-byte clusters: an EFI System Partition of a few MiB, as installers make them.
    _run("mkfs.vfat", "-F", "16", "-s", "1", "-n", fs.label, "-i", fs.uuid, "-h", str(hidden_sectors), str(target))
    # FAT times are local time: UTC here. SOURCE_DATE_EPOCH dates the directories mtools makes.
    env = {"TZ": "UTC", "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(guest_files.MTIME)}
    tree = fs.tree()
    dirs = [f"::{path}" for path, entry in tree.items() if entry.kind == "dir"]
    if dirs:
        _run("mmd", "-i", str(target), *dirs, env=env)
    for path, entry in tree.items():
        if entry.kind == "symlink":
            raise GuestImageError(f"vfat cannot hold the symlink {path}")
        if entry.kind == "file":
            source = Path(tempfile.mkdtemp(dir=tmp)) / "file"
            source.write_bytes(entry.data)
            os.utime(source, (entry.mtime, entry.mtime))
            _run("mcopy", "-m", "-i", str(target), str(source), f"::{path}", env=env)


def _ntfs(fs: Filesystem, target: Path, tmp: Path, hidden_sectors: int) -> None:
    # -p: the partition's first sector, in the boot sector as Windows expects (geometry as fdisk's).
    _run("mkntfs", "-q", "-F", "-f", "-L", fs.label, "-p", str(hidden_sectors), "-H", "255", "-S", "63", str(target))
    mountpoint = Path(tempfile.mkdtemp(dir=tmp))
    # In the foreground, so that its exit (after the unmount) says everything is written.
    try:
        driver = subprocess.Popen(
            ["ntfs-3g", "-o", "no_detach", str(target), str(mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except FileNotFoundError:
        raise GuestImageError("ntfs-3g is not installed (Debian package ntfs-3g)") from None
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            if driver.poll() is not None or time.monotonic() > deadline:
                raise GuestImageError(f"ntfs-3g did not mount {target.name}: {driver.stderr.read().strip()}")
            time.sleep(0.01)
        _tree(fs, mountpoint / "tree", owners=False)
        for child in (mountpoint / "tree").iterdir():
            child.rename(mountpoint / child.name)
        (mountpoint / "tree").rmdir()
        for path, entry in sorted(fs.tree().items(), key=lambda item: -item[0].count("/")):
            os.utime(mountpoint / path.lstrip("/"), (entry.mtime, entry.mtime))
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", str(mountpoint)], capture_output=True)
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
    if driver.returncode != 0:
        raise GuestImageError(f"ntfs-3g failed on {target.name}: {driver.stderr.read().strip()}")


# ----- a guest's LVM -------------------------------------------------------------------


@contextlib.contextmanager
def guest_lvm(device: str):
    """The environment of LVM commands that see `device` only (a guest's PV on a loop device): not the
    storage domains' PVs, nor other guests' VGs of the same name; no udev, no device-mapper, no
    backups under /etc, locks in a directory of their own."""
    with tempfile.TemporaryDirectory(prefix="ovirtsim-guest-lvm-") as conf_dir:
        accept = f'"a|^{re.escape(device)}$|", "r|.*|"'
        Path(conf_dir, "lvm.conf").write_text(
            f'devices {{ filter=[{accept}] global_filter=[{accept}] use_devicesfile=0 hints="none" '
            "obtain_device_list_from_udev=0 }\n"
            f'global {{ activation=0 use_lvmpolld=0 event_activation=0 locking_dir="{conf_dir}" }}\n'
            "activation { udev_sync=0 udev_rules=0 monitoring=0 }\n"
            "backup { backup=0 archive=0 }\n"
        )
        yield {"LVM_SYSTEM_DIR": conf_dir, "LVM_SUPPRESS_FD_WARNINGS": "1"}


@contextlib.contextmanager
def loop_device(path: Path, *, offset: int = 0, size: int | None = None, read_only: bool = False):
    args = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        args += ["--sizelimit", str(size)]
    device = _run(*args, *(["--read-only"] if read_only else []), str(path)).strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], capture_output=True)


def logical_volumes(device: str, env: dict) -> dict[str, tuple[int, int]]:
    """The LVs of the PV `device` by their device-mapper name (`VG-LV`): (offset in the PV, size).
    An LV in several pieces is refused: no linear mapping stands in for it here."""
    out = _run(
        "pvs", "--segments", "--reportformat", "json", "--units", "b", "--nosuffix",
        "-o", "vg_name,lv_name,pvseg_start,pvseg_size,pe_start,vg_extent_size", device,
        env=env,
    )  # fmt: skip
    found: dict[str, tuple[int, int]] = {}
    for report in json.loads(out).get("report", []):
        for seg in report.get("pvseg", []):
            if not seg["lv_name"]:
                continue  # free extents
            key = f"{seg['vg_name']}-{seg['lv_name']}"
            if key in found:
                raise GuestImageError(f"logical volume {key} is in several pieces; only linear LVs are read")
            extent = int(seg["vg_extent_size"])
            found[key] = (int(seg["pe_start"]) + int(seg["pvseg_start"]) * extent, int(seg["pvseg_size"]) * extent)
    return found


def _volume_group(vg: VolumeGroup, part_file: Path, tmp: Path) -> None:
    with loop_device(part_file) as device, guest_lvm(device) as env:
        _run("vgcreate", "-q", "--physicalextentsize", f"{vg.extent_size}b", vg.name, device, env=env)
        for lv in vg.volumes:
            _run("lvcreate", "-q", "-an", "-Zn", "-l", str(lv.extents), "-n", lv.name, vg.name, env=env)
        ranges = logical_volumes(device, env)
    for lv in vg.volumes:
        offset, size = ranges[f"{vg.name}-{lv.name}"]
        lv_file = _sized_file(Path(tempfile.mkdtemp(dir=tmp)) / "lv.img", size)
        make_filesystem(lv.filesystem, lv_file, tmp)
        _place(lv_file, part_file, offset)
        lv_file.unlink()


# ----- reading and changing a disk in place --------------------------------------------


def partitions(path: Path) -> dict[str, tuple[int, int, str]]:
    """The partitions of a disk image by key (`p1`, numbered as in its table): (start, size in bytes,
    type); {} for a disk without a partition table."""
    try:
        result = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise GuestImageError("sfdisk is not installed (Debian package fdisk)") from None
    if result.returncode != 0:
        if "does not contain a recognized partition table" in result.stderr:
            return {}
        raise GuestImageError(f"sfdisk --json failed: {result.stderr.strip()}")
    table = json.loads(result.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    found = {}
    for part in table.get("partitions", []):
        number = re.search(r"(\d+)$", part["node"][len(str(path)) :])
        found[f"p{number[1]}"] = (int(part["start"]) * sector, int(part["size"]) * sector, part["type"])
    return found


def fs_type(path: Path, offset: int, size: int) -> str:
    """What blkid finds at `offset` ("" for nothing it knows)."""
    result = subprocess.run(
        ["blkid", "-p", "-o", "export", "-O", str(offset), "-S", str(size), str(path)], capture_output=True, text=True
    )
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return found.get("TYPE", "")


@contextlib.contextmanager
def located(path: Path, key: str):
    """(offset, size) of the filesystem `key` of a disk image (`disk`, `pN` or `VG-LV`), for the duration
    (an LV is found through LVM on a read-only loop device over its PV's partition)."""
    size = path.stat().st_size
    if key == "disk":
        yield 0, size
        return
    parts = partitions(path)
    if re.fullmatch(r"p\d+", key):
        if key not in parts:
            raise GuestImageError(f"the disk has no partition {key} (it has: {', '.join(parts) or 'none'})")
        yield parts[key][:2]
        return
    pvs = [(start, length) for start, length, _ in parts.values() if fs_type(path, start, length) == "LVM2_member"]
    if not parts and fs_type(path, 0, size) == "LVM2_member":
        pvs = [(0, size)]
    known = []
    for start, length in pvs:
        with loop_device(path, offset=start, size=length, read_only=True) as device, guest_lvm(device) as env:
            volumes = logical_volumes(device, env)
        if key in volumes:
            yield start + volumes[key][0], volumes[key][1]
            return
        known += volumes
    raise GuestImageError(
        f"the disk has no filesystem {key!r}: name `disk`, a partition (pN) or a logical volume "
        f"(VG-LV; it has: {', '.join(known) or 'none'})"
    )


def write_ext4_file(path: Path, offset: int, file_path: str, data: bytes, *, mtime: int | None = None) -> None:
    """Write `file_path` of the ext2/3/4 filesystem at `offset` of `path` with `data`, as the guest's
    rewrite of a file: a new inode with the old one's mode and owner (0644 root:root for a new file,
    whose directory must exist), times now (its modification time `mtime`, if given: a test putting a
    file back as it was). Through debugfs, which takes `FILE?offset=N`."""
    if not file_path.startswith("/") or file_path.rstrip("/") != file_path or re.search(r'["\n\0]', file_path):
        raise GuestImageError(f"{file_path!r} is not an absolute path to a file")
    file_path = posixpath.normpath(file_path)
    spec = f"{path}?offset={offset}"
    parent, name = posixpath.split(file_path)
    listing = subprocess.run(["debugfs", "-R", f'ls -p "{parent}"', spec], capture_output=True, text=True)
    entries = {}
    for line in listing.stdout.splitlines():
        fields = line.split("/")
        if len(fields) >= 7:  # /inode/mode/uid/gid/name/size/
            entries[fields[5]] = (int(fields[2], 8), int(fields[3]), int(fields[4]))
    if "." not in entries:
        raise GuestImageError(f"{parent} is not a directory of the filesystem ({listing.stderr.strip()})")
    mode, uid, gid = entries.get(name, (0o100644, 0, 0))
    if mode & 0o170000 != 0o100000:
        raise GuestImageError(f"{file_path} is not a regular file")
    with tempfile.TemporaryDirectory(prefix="ovirtsim-guest-write-") as tmp:
        source = Path(tmp) / "data"
        source.write_bytes(data)
        os.chmod(source, mode & 0o7777)
        commands = [f'rm "{file_path}"'] if name in entries else []
        commands += [f'write {source} "{file_path}"', f'sif "{file_path}" uid {uid}', f'sif "{file_path}" gid {gid}']
        if mtime is not None:
            commands.append(f'sif "{file_path}" mtime @{int(mtime)}')
        script = ("\n".join(commands) + "\n").encode()
        done = subprocess.run(["debugfs", "-w", "-f", "-", spec], input=script, capture_output=True)
    # debugfs exits 0 whatever its commands did: read the file back.
    back = subprocess.run(["debugfs", "-R", f'cat "{file_path}"', spec], capture_output=True)
    if back.stdout != data:
        raise GuestImageError(f"debugfs could not write {file_path}: {done.stderr.decode(errors='replace').strip()}")
