"""A running VM's qemu: one qemu-storage-daemon per VM holding its disks, driven over QMP.

On a host, libvirt's qemu holds a running VM's volume chains open and everything the engine does
to them (guest I/O, live snapshot, live merge, backup, checkpoints) happens inside that process's
block layer. Here a `qemu-storage-daemon` plays that qemu: each disk's chain is opened as named
block nodes (one qcow2/raw node over one file node per volume, backing named explicitly as
libvirt does with -blockdev), the guest reads and writes through a writable NBD export of the
active node, and snapshots, merges, bitmaps and pull-mode backups are QMP commands.

As libvirt does, only the active volume is opened read-write; the volumes below are read-only
(so an image transfer's `qemu-nbd --read-only` can open them: qemu's image locks let readers
share a volume nobody writes) and are reopened read-write just for the moment a bitmap in them is
changed or a merge writes into them. A read-only volume's bitmaps are stored in it when it
becomes read-only, which is why a crash leaves only the active volume's bitmaps in use.
"""

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ovirtsim import storage_net
from ovirtsim.processes import spawn_with_engine
from ovirtsim.qemu import NfsShare, QemuError, protocol

log = logging.getLogger("ovirtsim")

__all__ = ["DiskChain", "QemuError", "QmpClient", "VmQemu"]

# Unix socket paths are limited to 107 bytes (sun_path).
MAX_SOCKET_PATH = 107
QMP_TIMEOUT = 120


# The events anybody waits for; the others (JOB_STATUS_CHANGE, ...) are dropped as they come.
AWAITED_EVENTS = {
    "BLOCK_JOB_READY",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_ERROR",
    "BLOCK_EXPORT_DELETED",
}


@dataclass
class DiskChain:
    disk_id: str
    volumes: list[tuple[str, Path, str]]  # (volume_id, path, "raw" | "qcow2"), base first, top last
    # The disk's size, for RAW volumes whose file is larger (an LV, rounded up to whole extents).
    size: int | None = None
    # Every volume read-only, the top too, and the guest's export too: a disk snapshot attached to
    # another VM read-only (then `disk_id` is a name of the attachment's own, not the disk's).
    read_only: bool = False
    # The NFS share the disk's domain is on: its volumes are opened through qemu's nfs driver (in
    # the hosts' storage network), not as files here; None: a local file or block domain.
    nfs: NfsShare | None = None


class QmpClient:
    """QMP over a pair of pipes: JSON lines, commands answered by id, events kept until waited for.

    Pipes (the daemon's stdin and stdout), not a socket: a socket chardev runs the monitor in an
    I/O thread of its own, and qemu 7.2 then sometimes never answered the first command of a
    connection made while it was starting (1 start in a few hundred under load, seen here).
    """

    def __init__(self, writer, reader, *, describe=lambda: ""):
        self._writer = writer  # binary file objects
        self._reader = reader
        self._buffer = b""
        self._describe = describe  # a hint (the daemon's log) when the connection drops
        self._next_id = 0
        self.events: list[dict] = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise QemuError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self, timeout: float | None = None) -> dict:
        timeout = QMP_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        fd = self._reader.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise QemuError(f"qemu-storage-daemon did not answer in {timeout}s{self._describe()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise QemuError(f"qemu-storage-daemon closed the QMP connection{self._describe()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments) -> object:
        self._next_id += 1
        request_id = f"r{self._next_id}"
        message = {"execute": command, "id": request_id}
        if arguments:
            message["arguments"] = arguments
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            self._writer.flush()
        except OSError as e:
            raise QemuError(f"lost the QMP connection: {e}{self._describe()}") from None
        while True:
            reply = self._read()
            if "event" in reply:
                self._keep(reply)
                continue
            if reply.get("id") != request_id:
                continue
            if "error" in reply:
                raise QemuError(f"{command} failed: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def wait_event(self, name: str | tuple[str, ...], timeout: float | None = None, **data) -> dict:
        """The first event `name` (or one of names) whose data has these values (events already received count)."""
        names = (name,) if isinstance(name, str) else name

        def matches(event: dict) -> bool:
            return event["event"] in names and all(event.get("data", {}).get(k) == v for k, v in data.items())

        for event in self.events:
            if matches(event):
                self.events.remove(event)
                return event
        timeout = QMP_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QemuError(f"no {name} event {data} in {timeout}s{self._describe()}")
            reply = self._read(remaining)
            if "event" not in reply:
                continue
            if matches(reply):
                return reply
            self._keep(reply)

    def _keep(self, event: dict) -> None:
        if event["event"] in AWAITED_EVENTS:
            self.events.append(event)
            del self.events[:-1000]  # a job nobody waited for must not grow this for ever

    def close(self) -> None:
        for f in (self._writer, self._reader):
            try:
                f.close()
            except OSError:
                pass


@dataclass
class _Layer:
    volume_id: str
    path: Path
    fmt: str
    node: str
    file_node: str
    read_only: bool
    size: int | None = None  # a RAW volume's guest-visible size, kept on every reopen


@dataclass
class _Disk:
    disk_id: str
    layers: list[_Layer]
    export_id: str
    read_only: bool = False
    # The guest's block device (a VM running here): a FUSE export of the active node. A writable
    # one takes the node's resize permission, which the NBD server refuses to share, so while it
    # exists the guest's NBD export is down and guest I/O goes through the file.
    fuse_export_id: str | None = None
    fuse_path: Path | None = None
    nbd_export_up: bool = True

    @property
    def top(self) -> _Layer:
        return self.layers[-1]


@dataclass
class _BackupDisk:
    scratch_node: str
    scratch_path: Path
    job_id: str
    export_id: str | None = None
    temp_bitmap: str | None = None
    top_node: str = ""


@dataclass
class _Backup:
    backup_id: str
    disks: dict[str, _BackupDisk] = field(default_factory=dict)


class VmQemu:
    """The qemu of one running VM (see the module docstring)."""

    def __init__(self, vm_id: str, run_dir: Path, *, netns: Path | None = None):
        self.vm_id = vm_id
        # The hosts' storage network (storage_net.py): the daemon runs in it, so that its nfs driver
        # reaches the NFS servers the hosts see (unix sockets, QMP on stdio and FUSE work from there).
        self.netns = netns
        self._nfs_shares: list[NfsShare] = []  # of the disks plugged in: their volumes go over NFS
        # Short: sockets live here and their paths are limited.
        self.dir = Path(run_dir) / f"vm-{vm_id[:8]}"
        self.nbd_socket = self.dir / "nbd.sock"
        self.log_file = self.dir / "qsd.log"
        if len(str(self.nbd_socket)) > MAX_SOCKET_PATH:
            raise QemuError(f"run directory {run_dir} is too long for unix sockets; use a shorter one")
        self._proc: subprocess.Popen | None = None
        self._qmp: QmpClient | None = None
        self._disks: dict[str, _Disk] = {}
        self._backups: dict[str, _Backup] = {}
        self._mirrors: dict[str, _Layer] = {}  # live storage migrations: job id -> target node
        self._counter = 0
        # One QMP conversation at a time; guest I/O also waits while a merge changes the chain,
        # as a guest's requests wait on a drained node in qemu.
        self._lock = threading.RLock()

    # ----- life cycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, disks: list[DiskChain]) -> None:
        with self._lock:
            if self.running:
                raise QemuError(f"the qemu of VM {self.vm_id} is already running")
            self.dir.mkdir(parents=True, exist_ok=True)
            self.nbd_socket.unlink(missing_ok=True)
            with open(self.log_file, "ab") as log_out:
                try:
                    # QMP on the daemon's stdin/stdout: ready when it greets, nothing to poll for.
                    self._proc = spawn_with_engine(
                        storage_net.nsenter(
                            self.netns,
                            ["qemu-storage-daemon", "--chardev", "stdio,id=qmp", "--monitor", "chardev=qmp"],
                        ),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log_out,
                    )
                except FileNotFoundError:
                    raise QemuError(
                        "qemu-storage-daemon is not installed (Debian package qemu-system-common)"
                    ) from None
            try:
                self._qmp = QmpClient(self._proc.stdin, self._proc.stdout, describe=self._log_tail)
                self._qmp.execute("nbd-server-start", addr={"type": "unix", "data": {"path": str(self.nbd_socket)}})
                for chain in disks:
                    self._plug(chain)
            except BaseException:
                self._kill()
                raise

    def stop(self) -> None:
        """Quit cleanly: qemu writes persistent bitmaps back and marks them consistent."""
        with self._lock:
            if not self.running:
                self._cleanup()
                return
            for backup_id in list(self._backups):
                try:
                    self.end_backup(backup_id)
                except QemuError:
                    log.exception("VM %s: ending backup %s before quitting failed", self.vm_id, backup_id)
            try:
                self._qmp.execute("quit")
            except QemuError:
                pass  # the daemon may close the connection before answering
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                log.error("VM %s: qemu-storage-daemon did not quit; killing it", self.vm_id)
                self._proc.kill()
                self._proc.wait()
            self._cleanup()

    def crash(self) -> None:
        """SIGKILL: bitmaps the daemon held are left marked in-use in the images (inconsistent)."""
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        self._proc = None
        for backup in self._backups.values():
            for bd in backup.disks.values():
                bd.scratch_path.unlink(missing_ok=True)
        self._backups.clear()
        self._mirrors.clear()
        self._disks.clear()
        self.nbd_socket.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return f" (qemu-storage-daemon log: {' | '.join(lines)})" if lines else ""

    def has_disk(self, disk_id: str) -> bool:
        return disk_id in self._disks

    def volume_ids(self, disk_id: str) -> list[str]:
        """The disk's chain as qemu holds it, base first."""
        with self._lock:
            return [layer.volume_id for layer in self._disk(disk_id).layers]

    def _require(self) -> QmpClient:
        if not self.running or self._qmp is None:
            raise QemuError(f"the qemu of VM {self.vm_id} is not running")
        return self._qmp

    def _disk(self, disk_id: str) -> _Disk:
        self._require()
        try:
            return self._disks[disk_id]
        except KeyError:
            raise QemuError(f"disk {disk_id} is not plugged into VM {self.vm_id}") from None

    def _name(self, prefix: str) -> str:
        # Node names are limited to 31 characters: short generated names, mapped in _disks.
        self._counter += 1
        return f"{prefix}{self._counter}"

    # ----- disks ------------------------------------------------------------------------

    def _open_layer(
        self, volume_id: str, path: Path, fmt: str, backing: str | None, *, read_only: bool, size: int | None = None
    ) -> _Layer:
        if fmt not in ("raw", "qcow2"):
            raise QemuError(f"volume {volume_id}: unknown format {fmt!r} (raw or qcow2)")
        file = protocol(path, self._nfs_shares)
        if file["driver"] == "nfs" and not self.netns:
            raise QemuError(
                f"volume {volume_id} is on an NFS share ({file['server']['host']}:{file['path']}), which the "
                "hosts reach only in their storage network: the simulator makes one only when it runs as root"
            )
        layer = _Layer(volume_id, Path(path), fmt, self._name("n"), self._name("f"), read_only)
        options = {
            "driver": fmt,
            "node-name": layer.node,
            "read-only": read_only,
            # A file, an LV's block device on a block domain (qemu's "file" driver refuses those), or a
            # file of an NFS domain through the nfs driver: each layer its own node, the backing named
            # below (relative backing file names do not resolve over nfs in qemu 7.2).
            "file": {**file, "node-name": layer.file_node},
        }
        if fmt == "raw" and size is not None:
            options["size"] = size  # the guest sees the disk, not the whole LV
            layer.size = size
        if fmt == "qcow2":
            options["backing"] = backing  # None: no backing, whatever the image header says
        elif backing is not None:
            raise QemuError(f"volume {volume_id} is raw and cannot have a backing volume")
        self._require().execute("blockdev-add", **options)
        return layer

    def _plug(self, chain: DiskChain) -> None:
        if chain.disk_id in self._disks:
            raise QemuError(f"disk {chain.disk_id} is already plugged into VM {self.vm_id}")
        if not chain.volumes:
            raise QemuError(f"disk {chain.disk_id} has no volumes")
        if chain.nfs is not None and chain.nfs not in self._nfs_shares:
            self._nfs_shares.append(chain.nfs)  # a snapshot's new volume on that share goes over NFS too
        layers: list[_Layer] = []
        try:
            for i, (volume_id, path, fmt) in enumerate(chain.volumes):
                backing = layers[-1].node if layers else None
                read_only = chain.read_only or i < len(chain.volumes) - 1
                layers.append(self._open_layer(volume_id, path, fmt, backing, read_only=read_only, size=chain.size))
            disk = _Disk(chain.disk_id, layers, self._name("g"), read_only=chain.read_only)
            self._add_guest_export(disk)
        except BaseException:
            for layer in reversed(layers):
                self._delete_node(layer.node)
            raise
        self._disks[chain.disk_id] = disk

    def _add_guest_export(self, disk: _Disk) -> None:
        self._require().execute(
            "block-export-add",
            type="nbd",
            id=disk.export_id,
            **{"node-name": disk.top.node},
            name=disk.disk_id,
            writable=not disk.read_only,
        )
        disk.nbd_export_up = True

    def _reopen(self, disk: _Disk, layer: _Layer, *, read_only: bool) -> None:
        if layer.read_only == read_only:
            return
        options = {"driver": layer.fmt, "node-name": layer.node, "read-only": read_only, "file": layer.file_node}
        if layer.fmt == "raw" and layer.size is not None:
            options["size"] = layer.size
        if layer.fmt == "qcow2":
            i = disk.layers.index(layer)
            options["backing"] = disk.layers[i - 1].node if i > 0 else None
        self._require().execute("blockdev-reopen", options=[options])
        layer.read_only = read_only

    def _delete_node(self, node: str) -> None:
        try:
            self._qmp.execute("blockdev-del", **{"node-name": node})
        except QemuError:
            log.exception("VM %s: removing block node %s failed", self.vm_id, node)

    def hotplug(self, chain: DiskChain, *, exist_ok: bool = False) -> None:
        with self._lock:
            self._require()
            if exist_ok and chain.disk_id in self._disks:
                return
            self._plug(chain)

    def unplug(self, disk_id: str) -> None:
        with self._lock:
            disk = self._disk(disk_id)
            self._refuse_in_backup(disk_id)
            self.unexport_fuse(disk_id, restore_guest_export=False)
            if disk.nbd_export_up:
                self._delete_export(disk.export_id)
            for layer in reversed(disk.layers):
                self._qmp.execute("blockdev-del", **{"node-name": layer.node})
            del self._disks[disk_id]

    def export_fuse(self, disk_id: str, mountpoint: Path, *, writable: bool) -> None:
        """Serve the disk's active node as the regular file `mountpoint` (FUSE): what a loop device
        turns into the block device the guest sees. A read-only disk is never exported writable."""
        with self._lock:
            disk = self._disk(disk_id)
            if disk.fuse_export_id is not None:
                raise QemuError(f"disk {disk_id} of VM {self.vm_id} is already exported as a file")
            if writable and disk.read_only:
                raise QemuError(f"disk {disk_id} of VM {self.vm_id} is read-only")
            if writable:
                self._delete_export(disk.export_id)
                disk.nbd_export_up = False
            export_id = self._name("u")
            try:
                self._qmp.execute(
                    "block-export-add",
                    type="fuse",
                    id=export_id,
                    **{"node-name": disk.top.node},
                    mountpoint=str(mountpoint),
                    writable=writable,
                )
            except QemuError:
                if not disk.nbd_export_up:
                    self._add_guest_export(disk)
                raise
            disk.fuse_export_id, disk.fuse_path = export_id, Path(mountpoint)

    def unexport_fuse(self, disk_id: str, *, restore_guest_export: bool = True) -> None:
        """Take the FUSE export down (qemu unmounts it); detach any loop device over it first."""
        with self._lock:
            disk = self._disk(disk_id)
            if disk.fuse_export_id is not None:
                self._delete_export(disk.fuse_export_id)
                disk.fuse_export_id = disk.fuse_path = None
            if restore_guest_export and not disk.nbd_export_up:
                self._add_guest_export(disk)

    @contextlib.contextmanager
    def writable_file(self, disk_id: str):
        """The disk's active node as a writable regular file for the duration, for a tool that edits
        the guest's filesystem in place as the guest would: the FUSE file its guest already uses (a
        VM running here), else one exported for the caller and taken down after, the guest's NBD
        export back. Guest I/O waits meanwhile (the qemu lock is held)."""
        with self._lock:
            disk = self._disk(disk_id)
            if disk.read_only:
                raise QemuError(f"disk {disk_id} of VM {self.vm_id} is read-only")
            if disk.fuse_path is not None:
                yield disk.fuse_path
                return
            mountpoint = self.dir / self._name("edit-")
            mountpoint.touch()
            try:
                self.export_fuse(disk_id, mountpoint, writable=True)
                try:
                    yield mountpoint
                finally:
                    self.unexport_fuse(disk_id)
            finally:
                mountpoint.unlink(missing_ok=True)

    def _refuse_in_backup(self, disk_id: str) -> None:
        for backup in self._backups.values():
            if disk_id in backup.disks:
                raise QemuError(f"disk {disk_id} is in backup {backup.backup_id}; end the backup first")

    def _delete_export(self, export_id: str) -> None:
        # "hard" closes client connections still open (an imageio ticket the caller forgot).
        self._qmp.execute("block-export-del", id=export_id, mode="hard")
        self._qmp.wait_event("BLOCK_EXPORT_DELETED", id=export_id)

    # ----- guest I/O ---------------------------------------------------------------------

    def _guest_url(self, disk_id: str):
        return urllib.parse.urlparse(f"nbd:unix:{self.nbd_socket}:exportname={disk_id}")

    def _through_file(self, disk_id: str) -> Path | None:
        """The FUSE file that serves the guest's I/O instead of its NBD export (see _Disk), if any."""
        disk = self._disk(disk_id)
        return None if disk.nbd_export_up else disk.fuse_path

    def write(self, disk_id: str, offset: int, data: bytes) -> None:
        """A guest write, flushed (as a guest's fsync would: a crash right after keeps it)."""
        from ovirt_imageio._internal import nbd

        with self._lock:
            path = self._through_file(disk_id)
            if path is not None:
                if offset < 0 or offset + len(data) > path.stat().st_size:
                    raise QemuError(f"write of {len(data)} bytes at {offset} is outside disk {disk_id}")
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                return
            with nbd.open(self._guest_url(disk_id)) as client:
                if offset < 0 or offset + len(data) > client.export_size:
                    raise QemuError(f"write of {len(data)} bytes at {offset} is outside disk {disk_id}")
                client.write(offset, data)
                client.flush()

    def read(self, disk_id: str, offset: int, length: int) -> bytes:
        from ovirt_imageio._internal import nbd

        with self._lock:
            path = self._through_file(disk_id)
            if path is not None:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(length)
            buf = bytearray(length)
            with nbd.open(self._guest_url(disk_id)) as client:
                client.readinto(offset, memoryview(buf))
            return bytes(buf)

    def size(self, disk_id: str) -> int:
        """The disk's size as the guest sees it (the size of its NBD export)."""
        from ovirt_imageio._internal import nbd

        with self._lock:
            path = self._through_file(disk_id)
            if path is not None:
                return path.stat().st_size
            with nbd.open(self._guest_url(disk_id)) as client:
                return client.export_size

    def resize(self, disk_id: str, size: int) -> None:
        """Grow the disk's active volume live (`block_resize`, what libvirt's blockResize runs).

        qemu grows the persistent dirty bitmaps with the image: the checkpoints stay usable and
        the new area is clean until the guest writes it. Backing volumes keep their size.
        qemu's NBD server forbids resizing an exported node, so the guest's export is taken
        down for the resize and put back with the new size (where a real guest would get a
        capacity-change notice from its virtio device).
        """
        with self._lock:
            disk = self._disk(disk_id)
            self._refuse_in_backup(disk_id)
            if size % 512:
                raise QemuError(f"disk {disk_id}: size {size} is not a multiple of 512 bytes")
            if not disk.nbd_export_up:  # a writable FUSE export shares the resize permission
                self._qmp.execute("block_resize", **{"node-name": disk.top.node}, size=size)
                return
            self._delete_export(disk.export_id)
            try:
                self._qmp.execute("block_resize", **{"node-name": disk.top.node}, size=size)
            finally:
                self._add_guest_export(disk)

    # ----- bitmaps -----------------------------------------------------------------------

    def _node_bitmaps(self) -> dict[str, list[dict]]:
        nodes = self._require().execute("query-named-block-nodes", flat=True)
        # Jobs keep unnamed bitmaps of their own; only named ones are anybody else's business.
        return {n["node-name"]: [b for b in n.get("dirty-bitmaps", []) if "name" in b] for n in nodes}

    def _chain_bitmaps(self, disk: _Disk) -> dict[str, dict[str, dict]]:
        """bitmap name -> {node: bitmap info} over the disk's layers."""
        by_node = self._node_bitmaps()
        found: dict[str, dict[str, dict]] = {}
        for layer in disk.layers:
            for b in by_node.get(layer.node, []):
                found.setdefault(b["name"], {})[layer.node] = b
        return found

    def bitmaps(self, disk_id: str) -> list[dict]:
        """The disk's bitmaps over its whole chain: [{"name", "recording", "inconsistent"}].

        `recording`: the active volume has it and it records writes; `inconsistent`: some
        volume's copy was left in use by a qemu that crashed (it cannot be used any more).
        Temporary bitmaps of running backups are not listed.
        """
        with self._lock:
            disk = self._disk(disk_id)
            result = []
            for name, copies in self._chain_bitmaps(disk).items():
                if not any(b.get("persistent") for b in copies.values()):
                    continue
                top = copies.get(disk.top.node)
                result.append(
                    {
                        "name": name,
                        "recording": bool(top and top.get("recording")),
                        "inconsistent": any(b.get("inconsistent") for b in copies.values()),
                    }
                )
            return result

    def add_bitmap(self, disk_id: str, name: str) -> None:
        with self._lock:
            disk = self._disk(disk_id)
            if disk.top.fmt != "qcow2":
                raise QemuError(f"disk {disk_id}: bitmaps need a qcow2 active volume (it is raw)")
            if name in self._chain_bitmaps(disk):
                raise QemuError(f"disk {disk_id} already has bitmap {name}")
            self._qmp.execute("block-dirty-bitmap-add", node=disk.top.node, name=name, persistent=True)

    def remove_bitmap(self, disk_id: str, name: str, *, missing_ok: bool = False) -> None:
        """Remove bitmap `name` from every volume of the chain (inconsistent ones too)."""
        with self._lock:
            disk = self._disk(disk_id)
            copies = self._chain_bitmaps(disk).get(name, {})
            if not copies:
                if missing_ok:
                    return
                raise QemuError(f"disk {disk_id} has no bitmap {name}")
            layers = [layer for layer in disk.layers if layer.node in copies]
            reopened = [layer for layer in layers if layer.read_only]
            try:
                for layer in reopened:
                    self._reopen(disk, layer, read_only=False)
                self._qmp.execute(
                    "transaction",
                    actions=[
                        {"type": "block-dirty-bitmap-remove", "data": {"node": layer.node, "name": name}}
                        for layer in layers
                    ],
                )
            finally:
                for layer in reopened:
                    self._reopen(disk, layer, read_only=True)

    # ----- snapshot and merge ------------------------------------------------------------

    def snapshot(self, disk_id: str, volume_id: str, path: Path) -> None:
        """Live snapshot: the caller made `path` (backing = current top); it becomes the active volume.

        Checkpoint bitmaps recording on the old top are created on the new top, so they go on
        recording (libvirt does the same); the old copies stay, frozen, in the volume below.
        """
        with self._lock:
            disk = self._disk(disk_id)
            self._refuse_in_backup(disk_id)
            layer = self._open_layer(volume_id, path, "qcow2", None, read_only=False)
            try:
                top_bitmaps = self._node_bitmaps().get(disk.top.node, [])
                actions = [
                    {
                        "type": "block-dirty-bitmap-add",
                        "data": {
                            "node": layer.node,
                            "name": b["name"],
                            "persistent": True,
                            "granularity": b["granularity"],
                        },
                    }
                    for b in top_bitmaps
                    if b.get("persistent") and b.get("recording") and not b.get("inconsistent")
                ]
                actions.append({"type": "blockdev-snapshot", "data": {"node": disk.top.node, "overlay": layer.node}})
                self._qmp.execute("transaction", actions=actions)
            except BaseException:
                self._delete_node(layer.node)
                raise
            old_top = disk.top
            disk.layers.append(layer)
            # Nothing writes the old top any more; read-only, it stores its bitmaps and lets
            # readers (an image transfer of this snapshot) open it.
            self._reopen(disk, old_top, read_only=True)

    def commit(self, disk_id: str, top_volume_id: str, base_volume_id: str) -> None:
        """Live merge of `top` (and anything between) into `base`, blocking until done.

        Bitmaps of the merged volumes are merged into base's copies once the job is done (added
        when base has none), so checkpoints keep every change; guest I/O waits meanwhile. The merged volumes'
        nodes are removed; their files are the caller's.
        """
        with self._lock:
            disk = self._disk(disk_id)
            ids = [layer.volume_id for layer in disk.layers]
            if top_volume_id not in ids or base_volume_id not in ids:
                raise QemuError(f"disk {disk_id}: volume {top_volume_id} or {base_volume_id} is not in its chain")
            top_i, base_i = ids.index(top_volume_id), ids.index(base_volume_id)
            if base_i >= top_i:
                raise QemuError(f"disk {disk_id}: base volume {base_volume_id} is not below {top_volume_id}")
            self._refuse_in_backup(disk_id)
            base, top = disk.layers[base_i], disk.layers[top_i]
            active = top_i == len(disk.layers) - 1
            self._reopen(disk, base, read_only=False)
            try:
                self._commit(disk, base, top, base_i, top_i, active)
            finally:
                if base is not disk.top:  # read-only again unless it became the active volume
                    self._reopen(disk, base, read_only=True)

    def _commit(self, disk: _Disk, base: _Layer, top: _Layer, base_i: int, top_i: int, active: bool) -> None:
        merged = disk.layers[base_i + 1 : top_i + 1]
        job_id = self._name("commit")
        args = {"job-id": job_id, "device": disk.top.node, "base-node": base.node, "top-node": top.node}
        if not active:
            # The volume above top gets base as its backing, written as vdsm writes it: relative.
            above = disk.layers[top_i + 1]
            args["backing-file"] = os.path.relpath(base.path, above.path.parent)
        self._qmp.execute("block-commit", **args)
        done = None
        if active:
            # An active commit mirrors until told to switch; it may also fail before it is ready.
            event = self._qmp.wait_event(("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"), device=job_id)
            if event["event"] == "BLOCK_JOB_READY":
                self._qmp.execute("block-job-complete", device=job_id)
            else:
                done = event
        done = done or self._qmp.wait_event("BLOCK_JOB_COMPLETED", device=job_id)
        if done["data"].get("error"):
            raise QemuError(f"merge of {top.volume_id} into {base.volume_id} failed: {done['data']['error']}")
        # After the job, as vdsm merges them: the job grew base to top's size (a disk extended
        # since the snapshot), and bitmaps merge only at equal sizes. Guest I/O still waits.
        if base.fmt == "qcow2":
            self._merge_bitmaps_down(base, merged)
        del disk.layers[base_i + 1 : top_i + 1]
        for layer in reversed(merged):
            self._delete_node(layer.node)

    def _merge_bitmaps_down(self, base: _Layer, merged: list[_Layer]) -> None:
        by_node = self._node_bitmaps()
        base_names = {b["name"] for b in by_node.get(base.node, [])}
        actions = []
        sources: dict[str, list[dict]] = {}
        for layer in merged:
            for b in by_node.get(layer.node, []):
                if not b.get("persistent") or b.get("inconsistent"):
                    continue
                if b["name"] not in base_names and b["name"] not in sources:
                    actions.append(
                        {
                            "type": "block-dirty-bitmap-add",
                            "data": {
                                "node": base.node,
                                "name": b["name"],
                                "persistent": True,
                                "granularity": b["granularity"],
                            },
                        }
                    )
                sources.setdefault(b["name"], []).append({"node": layer.node, "name": b["name"]})
        for name, srcs in sources.items():
            actions.append(
                {"type": "block-dirty-bitmap-merge", "data": {"node": base.node, "target": name, "bitmaps": srcs}}
            )
        if actions:
            self._qmp.execute("transaction", actions=actions)

    # ----- backup ------------------------------------------------------------------------

    def begin_backup(
        self,
        backup_id: str,
        *,
        disks: dict[str, str | None],
        checkpoint: str | None,
        checkpoint_disks: set[str],
        scratch_dir: Path,
    ) -> dict[str, str]:
        """Start a pull-mode backup as libvirt does; disk_id -> NBD url of its point-in-time export.

        `disks`: disk_id -> None (full) or the checkpoint bitmap the backup is incremental from.
        Each export serves the disk as it was at this call (a scratch overlay fed by
        copy-before-write); an incremental disk's export carries one dirty bitmap, the changes
        since that checkpoint (meta context `qemu:dirty-bitmap:<name>`).
        """
        from ovirtsim import qemu

        with self._lock:
            self._require()
            if backup_id in self._backups:
                raise QemuError(f"backup {backup_id} is already running on VM {self.vm_id}")
            if not disks:
                raise QemuError("a backup needs at least one disk")
            for disk_id in set(disks) | set(checkpoint_disks):
                self._disk(disk_id)
            busy = {d for b in self._backups.values() for d in b.disks}
            if busy & set(disks):
                raise QemuError(f"disk(s) {', '.join(sorted(busy & set(disks)))} are already in a backup")
            actions: list[dict] = []
            backup = _Backup(backup_id)
            for disk_id, since in disks.items():
                disk = self._disks[disk_id]
                if since is None:
                    continue
                copies = self._chain_bitmaps(disk).get(since)
                if not copies:
                    raise QemuError(f"Bitmap {since} does not exist on disk {disk_id}")
                if any(b.get("inconsistent") for b in copies.values()):
                    raise QemuError(f"Bitmap {since} on disk {disk_id} is inconsistent and cannot be used")
            if checkpoint is not None:
                for disk_id in checkpoint_disks:
                    disk = self._disks[disk_id]
                    if disk.top.fmt != "qcow2":
                        raise QemuError(f"disk {disk_id}: checkpoints need a qcow2 active volume (it is raw)")
                    if checkpoint in self._chain_bitmaps(disk):
                        raise QemuError(f"disk {disk_id} already has bitmap {checkpoint}")
            scratch_dir = Path(scratch_dir)
            scratch_dir.mkdir(parents=True, exist_ok=True)
            self._backups[backup_id] = backup  # from here on, end_backup undoes what exists
            try:
                sizes = {
                    n["node-name"]: n["image"]["virtual-size"]
                    for n in self._qmp.execute("query-named-block-nodes", flat=True)
                }
                for disk_id, since in disks.items():
                    disk = self._disks[disk_id]
                    path = scratch_dir / f"{backup_id}.{disk_id}.scratch.qcow2"
                    qemu.create(path, fmt="qcow2", size=sizes[disk.top.node])
                    bd = _BackupDisk(
                        scratch_node=self._name("s"), scratch_path=path, job_id=self._name("b"), top_node=disk.top.node
                    )
                    backup.disks[disk_id] = bd
                    self._qmp.execute(
                        "blockdev-add",
                        driver="qcow2",
                        **{"node-name": bd.scratch_node},
                        file={"driver": "file", "filename": str(path)},
                        backing=disk.top.node,
                    )
                    if since is not None:
                        bd.temp_bitmap = f"backup-{backup_id}"
                        copies = self._chain_bitmaps(disk)[since]
                        granularity = next(iter(copies.values()))["granularity"]
                        actions += [
                            {
                                "type": "block-dirty-bitmap-add",
                                "data": {
                                    "node": disk.top.node,
                                    "name": bd.temp_bitmap,
                                    "persistent": False,
                                    "disabled": True,
                                    "granularity": granularity,
                                },
                            },
                            {
                                "type": "block-dirty-bitmap-merge",
                                "data": {
                                    "node": disk.top.node,
                                    "target": bd.temp_bitmap,
                                    "bitmaps": [{"node": node, "name": since} for node in copies],
                                },
                            },
                        ]
                    actions.append(
                        {
                            "type": "blockdev-backup",
                            "data": {
                                "job-id": bd.job_id,
                                "device": disk.top.node,
                                "target": bd.scratch_node,
                                "sync": "none",
                                "auto-dismiss": True,
                            },
                        }
                    )
                if checkpoint is not None:
                    for disk_id in sorted(checkpoint_disks):
                        actions.append(
                            {
                                "type": "block-dirty-bitmap-add",
                                "data": {"node": self._disks[disk_id].top.node, "name": checkpoint, "persistent": True},
                            }
                        )
                try:
                    self._qmp.execute("transaction", actions=actions)
                except QemuError:
                    for bd in backup.disks.values():
                        bd.temp_bitmap = None  # the transaction added none of them
                        bd.job_id = ""
                    raise
                urls = {}
                for disk_id, bd in backup.disks.items():
                    bd.export_id = self._name("x")
                    name = f"{backup_id}.{disk_id}"
                    args = {
                        "type": "nbd",
                        "id": bd.export_id,
                        "node-name": bd.scratch_node,
                        "name": name,
                        "writable": False,
                        "allocation-depth": True,
                    }
                    if bd.temp_bitmap:
                        args["bitmaps"] = [bd.temp_bitmap]
                    self._qmp.execute("block-export-add", **args)
                    urls[disk_id] = f"nbd:unix:{self.nbd_socket}:exportname={name}"
                return urls
            except BaseException:
                try:
                    self.end_backup(backup_id)
                except QemuError:
                    log.exception("VM %s: undoing backup %s failed", self.vm_id, backup_id)
                raise

    def end_backup(self, backup_id: str) -> None:
        """Close the backup's exports, stop its jobs, remove its scratch nodes, files and temporary bitmaps."""
        with self._lock:
            backup = self._backups.get(backup_id)
            if backup is None:
                return
            if not self.running:
                self._backups.pop(backup_id)
                for bd in backup.disks.values():
                    bd.scratch_path.unlink(missing_ok=True)
                return
            for bd in backup.disks.values():
                if bd.export_id:
                    self._delete_export(bd.export_id)
                    bd.export_id = None
                if bd.job_id:
                    self._qmp.execute("block-job-cancel", device=bd.job_id, force=True)
                    # A sync=none job never completes by itself: cancelled is how it ends.
                    self._qmp.wait_event("BLOCK_JOB_CANCELLED", device=bd.job_id)
                    bd.job_id = ""
                if bd.scratch_node:
                    try:
                        self._qmp.execute("blockdev-del", **{"node-name": bd.scratch_node})
                    except QemuError as e:
                        if "Failed to find node" not in str(e):
                            raise
                    bd.scratch_node = ""
                if bd.temp_bitmap:
                    self._qmp.execute("block-dirty-bitmap-remove", node=bd.top_node, name=bd.temp_bitmap)
                    bd.temp_bitmap = None
                bd.scratch_path.unlink(missing_ok=True)
            del self._backups[backup_id]

    # ----- live storage migration (vdsm's diskReplicateStart / diskReplicateFinish) --------

    def start_mirror(self, disk_id: str, path: Path, target_file: dict, *, speed: int = 0) -> str:
        """Mirror the disk's active volume onto a new node (`blockdev-mirror sync=top`), as libvirt's
        shallow block copy onto a pre-created target does: the target's format node is opened over
        `target_file` (the protocol spec of the volume at `path`) with no backing (its chain is still
        being copied: it is attached at the pivot). `speed` limits the job (bytes/s, 0 none;
        `block-job-set-speed` changes it). Returns the job id; guest I/O goes on meanwhile."""
        with self._lock:
            disk = self._disk(disk_id)
            self._refuse_in_backup(disk_id)
            top = disk.top
            layer = _Layer(top.volume_id, Path(path), "qcow2", self._name("m"), "", False)
            options = {"driver": "qcow2", "node-name": layer.node, "read-only": False, "backing": None}
            if top.fmt != "qcow2":
                raise QemuError(f"disk {disk_id}: the active volume to mirror is {top.fmt}, not qcow2")
            layer.file_node = self._name("f")
            options["file"] = {**target_file, "node-name": layer.file_node}
            self._qmp.execute("blockdev-add", **options)
            job_id = self._name("mirror")
            try:
                self._qmp.execute(
                    "blockdev-mirror",
                    **{"job-id": job_id, "device": top.node, "target": layer.node, "sync": "top"},
                    speed=speed,
                    # A limited job copies a cluster at a time: by default it would copy up to 16 MiB at
                    # once before its rate limit first makes it wait.
                    **({"buf-size": 65536} if speed else {}),
                    **{"auto-dismiss": False},
                )
            except BaseException:
                self._delete_node(layer.node)
                raise
            self._mirrors[job_id] = layer
            return job_id

    def mirror_state(self, job_id: str) -> dict:
        """{"status": qemu's job status (running, ready, concluded...), "done", "total", "error"}."""
        with self._lock:
            jobs = {j["id"]: j for j in self._require().execute("query-jobs")}
        job = jobs.get(job_id)
        if job is None:
            return {"status": "gone", "done": 0, "total": 0, "error": "the mirror job is gone"}
        return {
            "status": job["status"],
            "done": job.get("current-progress", 0),
            "total": job.get("total-progress", 0),
            "error": job.get("error"),
        }

    def set_mirror_speed(self, job_id: str, speed: int) -> None:
        with self._lock:
            self._require().execute("block-job-set-speed", device=job_id, speed=speed)

    def pivot_mirror(self, disk_id: str, job_id: str, chain: list[tuple[str, Path, dict, str]]) -> None:
        """Switch the guest to the mirror's target (`job-complete`), its older volumes `chain` (base first:
        volume id, path, its protocol spec, raw/qcow2) opened read-only below it first (libvirt's late opening of
        a shallow copy's backing chain, `blockdev-reopen`). The guest's exports follow the new node (qemu
        replaces the source with the target for every parent); the source's nodes are closed (their
        files are the caller's). Checkpoint bitmaps of the old active volume go on in the new one.
        Guest I/O goes on while the job converges (the mirror copies what the guest writes meanwhile);
        a pivot that fails leaves the guest on its source and closes the target's nodes."""
        layers: list[_Layer] = []
        with self._lock:
            disk = self._disk(disk_id)
            target = self._mirrors[job_id]
            if self.mirror_state(job_id)["status"] != "ready":
                raise QemuError(f"the mirror of disk {disk_id} is not ready to pivot")
            try:
                for volume_id, path, spec, fmt in chain:
                    layer = _Layer(volume_id, Path(path), fmt, self._name("n"), self._name("f"), True)
                    options = {"driver": fmt, "node-name": layer.node, "read-only": True}
                    options["file"] = {**spec, "node-name": layer.file_node}
                    if fmt == "qcow2":
                        options["backing"] = layers[-1].node if layers else None
                    self._qmp.execute("blockdev-add", **options)
                    layers.append(layer)
                reopen = {"driver": "qcow2", "node-name": target.node, "read-only": False, "file": target.file_node}
                reopen["backing"] = layers[-1].node if layers else None
                self._qmp.execute("blockdev-reopen", options=[reopen])
                self._copy_bitmaps(disk.top.node, target.node)
                self._qmp.execute("job-complete", id=job_id)
            except BaseException:
                self._undo_mirror(job_id, layers)
                raise
        state = self._wait_concluded(job_id)
        with self._lock:
            if state["error"]:
                self._undo_mirror(job_id, layers)
                raise QemuError(f"the pivot of disk {disk_id} failed: {state['error']}")
            old = disk.layers
            disk.layers = [*layers, target]
            self._mirrors.pop(job_id)
            for layer in reversed(old):
                self._delete_node(layer.node)

    def _copy_bitmaps(self, source: str, target: str) -> None:
        """The checkpoints recording on `source`, added to `target` with their bits (what libvirt's block
        copy does for them): the mirror's writes into the target are recorded there from now on."""
        actions = []
        for b in self._node_bitmaps().get(source, []):
            if b.get("persistent") and b.get("recording") and not b.get("inconsistent"):
                name, granularity = b["name"], b["granularity"]
                add = {"node": target, "name": name, "persistent": True, "granularity": granularity}
                merge = {"node": target, "target": name, "bitmaps": [{"node": source, "name": name}]}
                actions.append({"type": "block-dirty-bitmap-add", "data": add})
                actions.append({"type": "block-dirty-bitmap-merge", "data": merge})
        if actions:
            self._qmp.execute("transaction", actions=actions)

    def _undo_mirror(self, job_id: str, layers: list[_Layer]) -> None:
        """The job ended (cancelled if it still ran), the target's node closed, then its backing's."""
        target = self._mirrors.pop(job_id, None)
        if self.mirror_state(job_id)["status"] not in ("concluded", "gone"):
            self._qmp.execute("job-cancel", id=job_id)
        self._wait_concluded(job_id)
        if target is not None:
            self._delete_node(target.node)
        for layer in reversed(layers):
            self._delete_node(layer.node)

    def cancel_mirror(self, job_id: str) -> None:
        """End the mirror without switching (or after it failed): the guest stays on its volumes and the
        target's node is closed (its file is the caller's)."""
        with self._lock:
            if job_id in self._mirrors and self.running:
                self._undo_mirror(job_id, [])

    def _wait_concluded(self, job_id: str) -> dict:
        """Wait for the job to conclude (guest I/O goes on unless the caller holds the lock); dismiss it."""
        deadline = time.monotonic() + QMP_TIMEOUT
        while True:
            state = self.mirror_state(job_id)
            if state["status"] in ("concluded", "gone"):
                break
            if time.monotonic() > deadline:
                raise QemuError(f"job {job_id} did not end in {QMP_TIMEOUT}s")
            time.sleep(0.02)
        if state["status"] == "concluded":
            with self._lock:
                self._require().execute("job-dismiss", id=job_id)
        return state
