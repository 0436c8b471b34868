"""The real data plane's tools: qemu-img for volumes and chains, qemu-nbd to serve them."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ovirtsim import storage_net
from ovirtsim.processes import spawn_with_engine


class QemuError(RuntimeError):
    pass


def run(*args: str, timeout: float = 600) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise QemuError(f"{args[0]} is not installed (Debian package qemu-utils)") from None
    if result.returncode != 0:
        raise QemuError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def create(path: Path, *, fmt: str, size: int, backing: Path | None = None, preallocate: bool = False) -> None:
    """Create a volume: RAW (sparse or preallocated) or QCOW2, optionally on a backing volume.

    Backing references are relative, as vdsm writes them, so a storage domain can move.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if fmt == "qcow2":
        args += ["-o", "compat=1.1,lazy_refcounts=on"]
    if backing is not None:
        rel = os.path.relpath(backing, path.parent)
        args += ["-b", rel, "-F", info(backing)["format"], "-u"]
    elif preallocate:
        args += ["-o", "preallocation=falloc" if fmt == "raw" else "preallocation=metadata"]
    run(*args, str(path), str(size))


def info(path: Path, *, chain: bool = False) -> dict | list:
    args = ["qemu-img", "info", "-U", "--output=json"]
    if chain:
        args.append("--backing-chain")
    return json.loads(run(*args, str(path)))


def actual_size(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def resize(path: Path, *, fmt: str, size: int, preallocate: bool = False) -> None:
    """Grow an image nobody holds open (persistent bitmaps grow with it)."""
    args = ["qemu-img", "resize", "-f", fmt]
    if preallocate:
        args.append("--preallocation=falloc")
    run(*args, str(path), str(size))


def commit(top: Path) -> None:
    """Merge `top` into its backing volume (what a snapshot removal does)."""
    run("qemu-img", "commit", "-q", "-d", str(top))


def rebase_unsafe(path: Path, backing: Path) -> None:
    rel = os.path.relpath(backing, path.parent)
    run("qemu-img", "rebase", "-u", "-b", rel, "-F", info(backing)["format"], str(path))


def check(path: Path) -> None:
    if info(path)["format"] == "qcow2":
        run("qemu-img", "check", "-q", str(path))


def bitmaps(path: Path) -> list[dict]:
    """The persistent dirty bitmaps of a QCOW2 volume: [{"name", "granularity", "flags"}].

    Flags as qemu reports them: "auto" (recording), "in-use" (held open, or left by a qemu that
    crashed: then the bitmap is inconsistent and cannot be used).
    """
    data = info(path)
    if data["format"] != "qcow2":
        return []
    return list(data.get("format-specific", {}).get("data", {}).get("bitmaps", []))


def add_bitmap(path: Path, name: str, *, enabled: bool = True) -> None:
    """Add a persistent bitmap to a volume no process holds (a VM that is down)."""
    args = ["qemu-img", "bitmap", "-f", "qcow2", "--add"]
    if not enabled:
        args.append("--disable")
    run(*args, str(path), name)


def remove_bitmap(path: Path, name: str) -> None:
    run("qemu-img", "bitmap", "-f", "qcow2", "--remove", str(path), name)


def merge_bitmap(path: Path, name: str, *, source: Path, source_name: str) -> None:
    """Merge bitmap `source_name` of volume `source` into bitmap `name` of `path` (added when missing)."""
    if name not in {b["name"] for b in bitmaps(path)}:
        add_bitmap(path, name)
    src_fmt = info(source)["format"]
    run("qemu-img", "bitmap", "-f", "qcow2", "--merge", source_name, "-b", str(source), "-F", src_fmt, str(path), name)


# vdsm:kvm, who the hosts' qemu reads and writes an NFS domain's volumes as (the share squashes to them).
NFS_UID = NFS_GID = 36


@dataclass(frozen=True)
class NfsShare:
    """An NFS share the hosts mount (ADDRESS:EXPORT_PATH) that is `local_dir` on this machine: its
    volumes are files here for the simulator's bookkeeping, and reached over NFS by the hosts' qemu."""

    address: str
    export_path: str
    local_dir: Path

    def holds(self, path: Path) -> bool:
        return Path(path).is_relative_to(self.local_dir)

    def nfs_path(self, path: Path) -> str:
        """The path of a file of the share as an NFS client names it (the export's path, then the file's in it)."""
        return self.export_path.rstrip("/") + "/" + str(Path(path).relative_to(self.local_dir))


def protocol(path: Path, shares: tuple[NfsShare, ...] | list[NfsShare] = ()) -> dict:
    """qemu's protocol node for a volume: a file, an LV's block device, or a file of an NFS share
    through qemu's nfs driver (libnfs, NFSv3: run inside the hosts' storage network, storage_net.py)."""
    for share in shares:
        if share.holds(path):
            return {
                "driver": "nfs",
                "server": {"type": "inet", "host": share.address},
                "path": share.nfs_path(path),
                "user": NFS_UID,
                "group": NFS_GID,
            }
    try:
        block = stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        block = False
    return {"driver": "host_device" if block else "file", "filename": str(path)}


class NbdServer:
    """A qemu-nbd process serving one volume (with or without its backing chain).

    A volume of an NFS data domain (`nfs`: its share) is read over NFS inside the hosts' storage
    network (`netns`), the volumes below (`backing`, base first) each opened as its own node and
    named as the next one's backing: a relative backing file does not resolve over nfs in qemu 7.2,
    and qemu-nbd's single image cannot name a backing node (it then asks the nfs node for a base
    directory, which it has none of), so a qemu-storage-daemon serves it, the same NBD export."""

    def __init__(
        self,
        volume: Path,
        socket: Path,
        *,
        fmt: str,
        read_only: bool = True,
        shallow: bool = False,
        bitmap: str | None = None,
        size: int | None = None,
        nfs: NfsShare | None = None,
        netns: Path | None = None,
        backing: list[tuple[Path, str]] | None = None,
    ):
        self.volume = volume
        self.nfs = nfs if nfs is not None and nfs.holds(volume) else None
        self.netns = netns
        self.backing = list(backing or [])
        self.size = size
        self.socket = socket
        self.fmt = fmt
        self.read_only = read_only
        self.shallow = shallow
        self.bitmap = bitmap
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        if shutil.which("qemu-nbd") is None:
            raise QemuError("qemu-nbd is not installed (Debian package qemu-utils)")
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        args = ["qemu-nbd", "--persistent", "--shared=8", "--socket", str(self.socket)]
        if self.read_only:
            args.append("--read-only")
        else:
            args += ["--discard=unmap", "--detect-zeroes=unmap"]
        args.append("--allocation-depth")
        if self.bitmap:
            args.append(f"--bitmap={self.bitmap}")
        if self.nfs is not None:
            args = self._nfs_args()
        elif self.shallow and self.fmt == "qcow2":
            # Only this layer: unallocated clusters read as zeros and report depth 0 ("hole"),
            # which is how a client tells them from data in a shallow download.
            spec = {"driver": "qcow2", "file": protocol(self.volume), "backing": None}
            args.append("json:" + json.dumps(spec))
        elif self.size is not None and self.fmt == "raw":
            # Only the first `size` bytes: a RAW volume on an LV larger than the disk.
            spec = {"driver": "raw", "size": self.size, "file": protocol(self.volume)}
            args.append("json:" + json.dumps(spec))
        else:
            args += ["--format", self.fmt, str(self.volume)]
        self.proc = spawn_with_engine(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        # Ready when it accepts a connection: the socket file appears at bind(), a moment before
        # listen(), and a client arriving in between is refused (seen on a busy machine).
        while not self._accepts():
            if self.proc.poll() is not None:
                raise QemuError(f"qemu-nbd failed to start: {self.proc.stderr.read().strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise QemuError("qemu-nbd did not start in time")
            time.sleep(0.01)

    def _nfs_args(self) -> list[str]:
        if not self.netns:
            raise QemuError(
                f"{self.volume.name} is on an NFS share ({self.nfs.address}:{self.nfs.export_path}), which the "
                "hosts reach only in their storage network: the simulator makes one only when it runs as root"
            )
        args = ["qemu-storage-daemon"]
        volumes = [*([] if self.shallow else self.backing), (self.volume, self.fmt)]
        node = None
        for i, (path, fmt) in enumerate(volumes):
            spec = {"driver": fmt, "node-name": f"l{i}", "read-only": True, "file": protocol(path, [self.nfs])}
            if fmt == "qcow2":
                spec["backing"] = node  # None: none, whatever the image says
            node = f"l{i}"
            args += ["--blockdev", json.dumps(spec)]
        top = json.loads(args[-1])
        if not self.read_only:
            top |= {"read-only": False, "discard": "unmap", "detect-zeroes": "unmap"}
        if self.size is not None and self.fmt == "raw":
            top["size"] = self.size
        args[-1] = json.dumps(top)
        export = {"type": "nbd", "id": "e", "node-name": node, "name": "", "writable": not self.read_only}
        export["allocation-depth"] = True
        if self.bitmap:
            export["bitmaps"] = [self.bitmap]
        args += ["--nbd-server", json.dumps({"addr": {"type": "unix", "path": str(self.socket)}, "max-connections": 8})]
        args += ["--export", json.dumps(export)]
        return storage_net.nsenter(self.netns, args)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except (FileNotFoundError, ConnectionRefusedError):
                return False
        return True

    @property
    def url(self) -> str:
        return f"nbd:unix:{self.socket}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
