"""Reading guest filesystems of a RAW disk image back with user-space tools, to compare them with
what ovirtsim.guest_files says the demo's disks hold.

`extract` copies one filesystem's tree out (debugfs rdump for ext2/3/4, `btrfs restore -m -S`,
mtools for vfat, a read-only ntfs-3g for NTFS); XFS, which has no such tool, is checked entry by
entry through xfs_db. `assert_holds` compares a disk image's filesystems with the expected ones.
"""

import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from ovirtsim import guest_files, guest_images

POSIX = ("ext2", "ext3", "ext4", "btrfs", "xfs")


def region(image: Path, offset: int, size: int, out: Path) -> Path:
    """Bytes [offset, offset + size) of `image` as the file `out`."""
    with open(image, "rb") as src, open(out, "wb") as dst:
        done = 0
        while done < size:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done, done)
            if copied == 0:
                break
            done += copied
    return out


def _run(*args: str, **kwargs) -> str:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def extract(part: Path, fstype: str, dest: Path) -> None:
    """The tree of the filesystem in the file `part` (of type `fstype`) under `dest`."""
    dest.mkdir(parents=True)
    if fstype in ("ext2", "ext3", "ext4"):
        _run("debugfs", "-R", f"rdump / {dest}", str(part))
        shutil.rmtree(dest / "lost+found")
    elif fstype == "btrfs":
        _run("btrfs", "restore", "-m", "-S", str(part), str(dest))
    elif fstype == "vfat":
        env = os.environ | {"TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
        names = _run("mdir", "-b", "-i", str(part), "::/", env=env).split()
        if names:
            _run("mcopy", "-s", "-m", "-i", str(part), *names, str(dest), env=env)
    elif fstype == "ntfs":
        mountpoint = dest.parent / f"{dest.name}.mnt"
        mountpoint.mkdir()
        # In the foreground: its exit after the unmount says it has let go of the file.
        driver = subprocess.Popen(
            ["ntfs-3g", "-o", "ro,no_detach", str(part), str(mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not os.path.ismount(mountpoint):
                assert driver.poll() is None and time.monotonic() < deadline, "ntfs-3g did not mount"
                time.sleep(0.01)
            shutil.copytree(mountpoint, dest, symlinks=True, dirs_exist_ok=True)
        finally:
            subprocess.run(["umount", str(mountpoint)], capture_output=True)
            driver.wait(timeout=30)
    else:
        raise AssertionError(f"no reader for {fstype}")


def assert_tree(dest: Path, fs: guest_files.Filesystem, fstype: str, changed: dict[str, bytes]) -> None:
    """The extracted tree holds the expected entries, with `changed` files' new contents (their
    times not compared): names, kinds, contents, symlink targets, and for POSIX filesystems modes
    and owners; modification times everywhere (FAT's in UTC)."""
    expected = fs.tree()
    for path, data in changed.items():
        old = expected.get(path, guest_files.file(path, b""))
        expected[path] = guest_files.Entry(path, data=data, mode=old.mode, uid=old.uid, gid=old.gid, mtime=-1)
    touched = {posixpath.dirname(path) for path in changed}  # a rewrite changes its directory's time
    found = {"/" + str(p.relative_to(dest)) for p in dest.rglob("*")}
    assert found == set(expected), (sorted(found - set(expected)), sorted(set(expected) - found))
    for path, entry in expected.items():
        local = dest / path.lstrip("/")
        st = os.lstat(local)
        if entry.kind == "symlink":
            assert stat.S_ISLNK(st.st_mode) and os.readlink(local) == entry.target, path
            continue
        if entry.kind == "dir":
            assert stat.S_ISDIR(st.st_mode), path
        else:
            assert stat.S_ISREG(st.st_mode) and local.read_bytes() == entry.data, path
        if fstype in POSIX:
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (entry.mode, entry.uid, entry.gid), path
        if entry.mtime != -1 and path not in touched:
            assert int(st.st_mtime) == entry.mtime, (path, st.st_mtime)


def assert_xfs(part: Path, fs: guest_files.Filesystem, changed: dict[str, bytes]) -> None:
    """XFS, entry by entry through xfs_db: kind, mode, owner, time, and each file's content."""
    assert not changed, "no writes to XFS"
    listing = _run("xfs_db", "-r", "-c", "path /", "-c", "ls", str(part))
    top = {m[1] for m in re.finditer(r"^\s*\d+\s+\d+\s+\S+\s+0x[0-9a-f]+\s+\d+\s+(.*) \(good\)$", listing, re.M)}
    assert top - {".", ".."} == {p.strip("/") for p in fs.tree() if p.count("/") == 1}
    env = os.environ | {"TZ": "UTC"}
    block_size = int(_run("xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize", str(part)).split("=")[1])
    for path, entry in fs.tree().items():
        assert entry.kind != "symlink", "no symlinks on XFS here"
        fields = ("core.mode", "core.uid", "core.gid", "core.size", "core.mtime.sec")
        out = _run(
            "xfs_db", "-r", "-c", f"path {path}", "-c", f"print {' '.join(fields)}", "-c", "bmap", str(part), env=env
        )
        values = dict(re.findall(r"^(core\.\S+) = (.*)$", out, re.M))
        kind = 0o100000 if entry.kind == "file" else 0o040000
        assert int(values["core.mode"], 8) == kind | entry.mode, path
        assert (int(values["core.uid"]), int(values["core.gid"])) == (entry.uid, entry.gid), path
        mtime = time.strptime(values["core.mtime.sec"], "%a %b %d %H:%M:%S %Y")
        assert time.strftime("%Y-%m-%d %H:%M:%S", mtime) == time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime(entry.mtime)
        ), path
        if entry.kind == "file":
            data = b""
            for start_block, count in re.findall(r"startblock (\d+) \(\d+/\d+\) count (\d+)", out):
                where = _run("xfs_db", "-r", "-c", f"convert fsblock {start_block} byte", str(part))
                offset = int(re.search(r"\((\d+)\)", where)[1])
                with open(part, "rb") as f:
                    f.seek(offset)
                    data += f.read(int(count) * block_size)
            assert data[: int(values["core.size"])] == entry.data, path


def assert_holds(image: Path, disk: str, tmp: Path, changed: dict[str, dict[str, bytes]] | None = None) -> None:
    """The RAW image holds the demo disk `disk` as guest_files lays it out: its partition table and
    every filesystem (`changed`: filesystem key -> {path: new content} of files the guest wrote)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{disk}-", dir=tmp))
    layout = guest_files.DISKS[disk]
    parts = guest_images.partitions(image)
    if layout.table is None:
        assert parts == {}
    else:
        table = _run("sfdisk", "--json", str(image))
        assert f'"label": "{layout.table}"' in table
        assert [(start, kind.lower()) for start, _, kind in parts.values()] == [
            (p.start, p.type.lower()) for p in layout.partitions
        ]
    for key, fs in guest_files.filesystems(disk).items():
        with guest_images.located(image, key) as (offset, size):
            found = guest_images.fs_type(image, offset, size)
            part = region(image, offset, size, tmp / f"{disk}-{key}.img")
        assert found == fs.fstype, (disk, key, found)
        if fs.fstype == "xfs":
            assert_xfs(part, fs, (changed or {}).get(key, {}))
        else:
            extract(part, fs.fstype, tmp / f"{disk}-{key}")
            assert_tree(tmp / f"{disk}-{key}", fs, fs.fstype, (changed or {}).get(key, {}))
        label = _run("blkid", "-p", "-o", "value", "-s", "LABEL", str(part)).strip()
        assert label == fs.label, (disk, key, label)
        part.unlink()
