"""The hosts' storage network: a private network namespace where the simulated hosts do NFS.

qemu's `nfs` block driver (libnfs, NFSv3 only in qemu 7.2) asks rpcbind on port 111 where the
server's NFS and MOUNT services are: that takes a portmapper of the hosts' own, which this machine
cannot lend (port 111 is the machine's, and there is one per machine). So the simulator, when it
runs as root, makes a network namespace of its own with loopback up and rpcbind running in it; a
node of this machine serving the hosts (its NFS-Ganesha, NFS_NETNS) runs there too, and the hosts'
NFS clients (the VMs' qemu, nfs-ls) run there: 127.0.0.1 inside it is the node as the hosts see it.

The namespace is a bind-mounted nsfs file, STATE/storage-net/netns, as `ip netns add` makes one, so
it outlives the simulator's process: a killed simulator comes back to the same namespace, and a
node's Ganesha serving in it goes on. rpcbind runs in its own session for the same reason, with a
private /run (its lock and unix socket are per machine otherwise: two simulators could not each
run one). stop() unmounts the file and stops rpcbind; processes still inside keep the namespace
alive until they end.
"""

import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("ovirtsim")

CLONE_NEWNET = 0x40000000
RPCBIND_PORT = 111
START_TIMEOUT = 10.0
_libc = ctypes.CDLL(None, use_errno=True)
# The rpcbinds this process started, by pid: reaped when stopped (no zombie left behind).
_children: dict[int, subprocess.Popen] = {}


class StorageNetError(RuntimeError):
    pass


def is_loopback(address: str) -> bool:
    """A share served from this machine: the hosts mount what a node here exports."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def net_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "storage-net"


def netns_path(state_dir: Path) -> Path:
    return net_dir(state_dir) / "netns"


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mount point (the bind-mounted namespace file), as /proc/self/mountinfo says."""
    target = str(Path(path).resolve())
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # spaces come as \040
            if point == target:
                return True
    return False


def start(state_dir: Path) -> Path | None:
    """The storage network's namespace, made when missing, with its rpcbind running; None when
    not root (nothing can make a namespace then: what needs one says so)."""
    if os.geteuid() != 0:
        log.info("not root: the hosts' storage network (a network namespace) is not made; NFS data domains fail")
        return None
    for tool in ("unshare", "nsenter", "ip", "rpcbind"):
        if shutil.which(tool) is None:
            package = {"ip": "iproute2", "rpcbind": "rpcbind"}.get(tool, "util-linux")
            raise StorageNetError(f"{tool} is missing: the hosts' storage network needs the Debian package {package}")
    path = netns_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_mounted(path):
        path.touch()
        # unshare --net=FILE: a new namespace bind-mounted on FILE (ip netns add's way), its lo up.
        done = subprocess.run(
            ["unshare", f"--net={path}", "ip", "link", "set", "lo", "up"], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise StorageNetError(f"the hosts' storage network cannot be made: {done.stderr.strip()}")
    if _rpcbind_pid(state_dir) is None:
        _start_rpcbind(state_dir)
    return path


def stop(state_dir: Path) -> None:
    """Stop rpcbind and remove the namespace's file (what still runs inside keeps it until it ends)."""
    pid = _rpcbind_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        child = _children.pop(pid, None)
        if child is not None:
            try:
                child.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        deadline = time.monotonic() + START_TIMEOUT
        while _rpcbind_pid(state_dir) == pid and time.monotonic() < deadline:
            time.sleep(0.01)
    (net_dir(state_dir) / "rpcbind.pid").unlink(missing_ok=True)
    path = netns_path(state_dir)
    if path.exists() and is_mounted(path):
        done = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            log.error("the storage network's %s could not be unmounted: %s", path, done.stderr.strip())
            return
    path.unlink(missing_ok=True)


def nsenter(netns: Path | str | None, argv: list[str]) -> list[str]:
    """`argv` run inside the namespace (as it is without one)."""
    return ["nsenter", f"--net={netns}", *argv] if netns else list(argv)


def _in_netns(netns: Path | str, fn):
    """fn() called by a thread of its own that entered the namespace: a network namespace is a
    thread's, and the sockets that thread makes stay in it when other threads use them."""
    result: dict = {}

    def run() -> None:
        try:
            fd = os.open(str(netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise StorageNetError(f"cannot enter the network namespace {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run, name="netns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def accepts(netns: Path | str | None, host: str, port: int) -> bool:
    """Whether host:port accepts a TCP connection, seen from inside the namespace."""

    def connect() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return _in_netns(netns, connect) if netns else connect()


def _rpcbind_pid(state_dir: Path) -> int | None:
    """The running rpcbind of this namespace, if any (a reused pid, or one elsewhere, is not it)."""
    try:
        pid = int((net_dir(state_dir) / "rpcbind.pid").read_text())
        if Path(f"/proc/{pid}/comm").read_text().strip() != "rpcbind":
            return None
        if os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(netns_path(state_dir)).st_ino:
            return None
    except (OSError, ValueError):
        return None
    return pid


def _start_rpcbind(state_dir: Path) -> None:
    path = netns_path(state_dir)
    log_file = net_dir(state_dir) / "rpcbind.log"
    # A private /run: rpcbind's lock (/run/rpcbind.lock) and unix socket are otherwise one per
    # machine. Without the socket, NFS servers here register over TCP 127.0.0.1:111, in the namespace.
    script = (
        "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/rpcbind && "
        "chown _rpc /run/rpcbind 2>/dev/null; exec rpcbind -f"
    )
    with open(log_file, "ab") as out:
        # Its own session, not the engine's child: it must outlive a killed simulator (see above).
        process = subprocess.Popen(
            nsenter(path, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not accepts(path, "127.0.0.1", RPCBIND_PORT):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise StorageNetError(f"rpcbind did not start in the hosts' storage network: {' | '.join(tail)}")
        time.sleep(0.01)
    (net_dir(state_dir) / "rpcbind.pid").write_text(str(process.pid))
    _children[process.pid] = process
