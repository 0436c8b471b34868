"""A session on a hypervisor host over OpenSSH: commands, LV activation, moving volumes between the host
and this node (reads for the SSH transfer, writes for the SSH restore).

Measured here (bench/ssh_paths.py, an 8 GiB QCOW2 volume holding 1 GiB): OpenSSH `cat` of the
volume file 206 MiB/s; `qemu-nbd` on the host read through an OpenSSH unix-socket forward by a
local `qemu-img convert` 117 MiB/s (0.57x), 164 MiB/s with 4 connections; netcat 317 MiB/s. So
QCOW2 layers are copied as files (a QCOW2 file holds only its allocated clusters, so zero areas
are neither sent nor stored) and merged here; a RAW volume, whose file or LV holds its zeros, is
served by `qemu-nbd` on the host, whose block status skips them.

Every remote process lives only as long as the SSH channel that started it (a reader gets
SIGPIPE, a qemu-nbd is killed when the channel's stdin closes), and every local `ssh` or
`qemu-img` dies with the worker thread that started it (PR_SET_PDEATHSIG), so a worker killed
mid-copy leaves nothing running on either side.
"""

import contextlib
import hashlib
import json
import math
import queue
import re
import secrets
import shlex
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from core.errors import Cancelled
from core.openssh import OpenSsh, SshError, SshTarget, spawn
from core.qemu_img import percent_reader
from repository.storage import GrowingFileChecksum, RepositoryError, start_writeback

MiB = 1024**2
MISSING = 3  # exit status of a remote check: the path is not there


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# The record of a logical volume a session activated on a host (Job.remember_engine_object): the
# reaper deactivates it after a dead worker (hosts.login registers its undo).
LV = "lv"


class HostSession:
    """One hypervisor host reached with OpenSSH: commands, volume reads and writes, LV activation."""

    def __init__(self, target: SshTarget, *, job=None, host_pk: int | None = None):
        self.target = target
        self.job = job
        self.host_pk = host_pk  # recorded with each LV it activates, for the reaper of a dead worker
        self.ssh = OpenSsh(target)
        self.activated: list[str] = []  # LVs this session activated, deactivated on close
        self._vg_devices: dict[str, list[str]] = {}  # VG -> its PVs as this host names them

    def close(self) -> None:
        try:
            for lv in reversed(self.activated):
                self.deactivate_lv(lv)
            self.activated.clear()
        finally:
            self.ssh.close()

    def deactivate_lv(self, lv: str) -> bool:
        """Deactivate VG/LV and forget its record on the job; a failure is told on the job (it stays
        active, and recorded)."""
        try:
            self.deactivate(lv)
        except SshError as e:
            self._log("error", f"{e} It stays active on the host; deactivate it there.")
            return False
        self._log("info", f"Deactivated logical volume {lv} on host {self.target.name}")
        if self.job is not None:
            self.job.forget_engine_object(lv)
        return True

    def deactivate(self, lv: str) -> None:
        """Deactivate VG/LV; SshError in words when the host refuses."""
        config = self.lvm_config(lv.split("/")[0])
        self.ssh.run(f"lvchange {config} -an {shlex.quote(lv)}", what=f"deactivating logical volume {lv}")

    def __enter__(self) -> "HostSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _log(self, level: str, message: str) -> None:
        if self.job is not None:
            self.job.log(level, message)

    def run(self, command: str, *, what: str, timeout: float = 120) -> str:
        return self.ssh.run(command, what=what, timeout=timeout)

    def check_login(self) -> None:
        self.ssh.log_in()

    # ----- block storage ------------------------------------------------------------------

    def lvm_config(self, vg: str) -> str:
        """`--config ...` (shell-quoted) that lets an LVM command on the host see the storage domain's
        VG: an oVirt host's own LVM filter (vdsm-tool config-lvm-filter) or devices file hides the
        domains' devices, and vdsm names them in every LVM command it runs; so do we. The devices
        are learnt once per VG from the host, with a filter that accepts every device."""
        devices = self._vg_devices.get(vg)
        if devices is None:
            out = self.run(
                f"vgs --noheadings -o pv_name {_lvm_override(['a|.*|'])} {shlex.quote(vg)}",
                what=f"looking up the devices of volume group {vg}",
            )
            devices = sorted(set(out.split()))
            if not devices:
                raise SshError(
                    f"Host {self.target.name or self.target.address} sees no device of volume group {vg}: "
                    "check that the host is connected to the storage domain."
                )
            self._vg_devices[vg] = devices
        return _lvm_override([f"a|^{re.escape(d)}$|" for d in devices])

    def activate_lv(self, vg: str, lv: str, *, disk: str = "") -> None:
        """Make /dev/VG/LV available; remember it only if this session activated it, so that an LV a
        running VM (or someone else) holds active stays active."""
        name = f"{vg}/{lv}"
        q = shlex.quote(name)
        config = self.lvm_config(vg)
        # lv_attr's fifth letter is the activation state on this host ("a"); every lvs has it.
        words = self.run(
            f"lvs {config} --noheadings -o lv_name,vg_name,lv_attr {q}", what=f"looking up logical volume {name}"
        ).split()
        if len(words) >= 3 and len(words[2]) > 4 and words[2][4] == "a":
            return
        try:
            self.run(f"lvchange {config} -ay {q}", what=f"activating logical volume {name}")
        except SshError as e:
            if "locked by other host" not in str(e):
                raise
            # lvmlockd: another host holds it (a VM running there, or a transfer); reading it here
            # could catch it mid-write, and deactivating it is not ours to do.
            raise SshError(
                f"Logical volume {name}{f' of disk {disk}' if disk else ''} is active on another host, so "
                f"host {self.target.name or self.target.address} cannot activate it ({e}). Nothing was stored."
            ) from None
        self.activated.append(name)
        if self.job is not None:
            # On the job as soon as it is active: a worker killed now leaves the reaper a record.
            self.job.remember_engine_object(LV, name, host=self.host_pk)
        self._log("info", f"Activated logical volume {name} on host {self.target.name}")

    # ----- reading ------------------------------------------------------------------------

    def volume_info(self, path: str) -> dict:
        """`qemu-img info` of a volume on the host; SshError naming the path when it is missing."""
        q = shlex.quote(path)
        try:
            out = self.run(
                f"test -e {q} || exit {MISSING}; exec qemu-img info -U --output=json {q}", what=f"reading volume {path}"
            )
        except SshError as e:
            if e.returncode == MISSING:
                raise self.missing(path) from None
            raise
        return json.loads(out)

    def missing(self, path: str) -> SshError:
        return SshError(
            f"Volume {path} is missing on host {self.target.name or self.target.address}: the storage domain "
            "is not mounted there, or the volume is gone. Nothing was stored."
        )

    def read_file(
        self,
        path: str,
        out: Path,
        *,
        length: int | None = None,
        checksum: bool = False,
        progress: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> tuple[int, str]:
        """Copy a volume file (its first `length` bytes: a QCOW2 on an LV ends before the LV does) to
        `out` with OpenSSH; returns the bytes copied and, with `checksum`, "blake3:HEX" of the file
        taken as it lands ("" otherwise: a file that is changed afterwards is hashed then)."""
        q = shlex.quote(path)
        reader = f"head -c {int(length)}" if length is not None else "cat"
        command = f"test -e {q} || exit {MISSING}; exec {reader} {q}"
        with open(out, "wb") as f:
            follower = GrowingFileChecksum(out) if checksum else None
            proc = None
            try:
                proc = spawn(self.ssh.argv(command), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE)
                self._follow(proc, lambda: out.stat().st_size, progress, cancelled)
            except BaseException:
                if follower is not None:
                    follower.abandon()
                if proc is not None:
                    proc.stderr.close()
                raise
        stderr = proc.stderr.read()
        proc.stderr.close()
        if proc.returncode != 0:
            if follower is not None:
                follower.abandon()
            if proc.returncode == MISSING:
                raise self.missing(path)
            raise SshError(self.ssh.problem(proc.returncode, stderr, what=f"reading volume {path}"))
        digest = follower.finish() if follower is not None else ""
        copied = out.stat().st_size
        if length is not None and copied != length:
            raise SshError(f"Reading volume {path} on {self.target.where} ended after {copied} of {length} bytes.")
        return copied, digest

    def read_file_netcat(
        self,
        path: str,
        out: Path,
        *,
        length: int | None = None,
        progress: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> tuple[int, str]:
        """Copy a volume file over a plain TCP connection (not encrypted): the host listens on an
        ephemeral port for this one transfer and sends the file to the first connection that gives
        a one-time token; both ends hash the bytes (SHA-256) and they must match, the host's hash
        coming back over SSH. Returns the bytes copied and "sha256:HEX" of them."""
        token = secrets.token_hex(16)
        sender = _netcat_sender(self.target.address, token, path, length)
        proc = spawn(
            self.ssh.argv(f"python3 -c {shlex.quote(sender)}"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = proc.stdout.readline().strip()
            if not line.isdigit():
                proc.wait()
                if proc.returncode == MISSING:
                    raise self.missing(path)
                raise SshError(self.ssh.problem(proc.returncode, proc.stderr.read(), what=f"listening for {path}"))
            with socket.create_connection((self.target.address, int(line)), timeout=60) as sock:
                sock.sendall(token.encode())
                got, received = _receive_hashed(sock, out, progress=progress, cancelled=cancelled)
            progress(got)
            sent = proc.stdout.readline().strip().decode()
            proc.wait(60)
            if proc.returncode != 0:
                raise SshError(self.ssh.problem(proc.returncode, proc.stderr.read(), what=f"sending volume {path}"))
            if sent != received:
                raise SshError(
                    f"Volume {path} from {self.target.where} arrived damaged over netcat: its SHA-256 differs from "
                    "what the host sent."
                )
            return got, f"sha256:{sent}"
        finally:
            _stop(proc)
            for stream in (proc.stdout, proc.stderr):
                stream.close()

    @contextlib.contextmanager
    def nbd_tunnel(self, path: str, fmt: str, *, writable: bool, what: str) -> Iterator[Path]:
        """`qemu-nbd` on the host serving a volume on a unix socket, forwarded over SSH to a local
        socket, which is yielded. It lives only as long as the SSH channel: closing our end of its
        stdin makes the host's script kill it."""
        run_id = uuid.uuid4().hex[:12]
        remote = f"/tmp/ovirt-backup-{run_id}.sock"  # vdsm's hosts keep /tmp; the socket lives only for this use
        local = self.ssh.dir / f"nbd-{run_id}.sock"
        mode = "--cache=none" if writable else "-r"
        script = (
            f"qemu-nbd --fork --pid-file {remote}.pid {mode} -f {shlex.quote(fmt)} -k {remote} "
            f"{shlex.quote(path)} || exit 3; echo ready; cat >/dev/null; "
            f"kill $(cat {remote}.pid) 2>/dev/null; rm -f {remote} {remote}.pid"
        )
        tunnel = spawn(
            self.ssh.argv(f"sh -c {shlex.quote(script)}", forwards=[(str(local), remote)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            if tunnel.stdout.readline().strip() != b"ready":
                tunnel.wait()
                raise SshError(self.ssh.problem(tunnel.returncode, tunnel.stderr.read(), what=f"{what} {path}"))
            yield local
        finally:
            with contextlib.suppress(OSError):
                tunnel.stdin.close()
            try:
                tunnel.wait(60)
            except subprocess.TimeoutExpired:
                _stop(tunnel)
            for stream in (tunnel.stdout, tunnel.stderr):
                stream.close()

    def read_nbd(
        self, path: str, fmt: str, out: Path, *, size: int | None = None, progress: Callable[[int], None], cancelled
    ) -> int:
        """Store a volume (RAW, or a QCOW2 with its backing chain) as a QCOW2 at `out`: `qemu-nbd` on the
        host serves it read-only, a local `qemu-img convert` reads it, skipping what the host's block
        status says is zero. `size` limits what is read to the disk's size: a RAW volume on a logical
        volume is the LV, rounded up to whole extents."""
        with self.nbd_tunnel(path, fmt, writable=False, what="serving volume") as local:
            if size is None:
                source = ["-f", "raw", f"nbd+unix:///?socket={local}"]
            else:
                source = [
                    "--image-opts",
                    f"driver=raw,size={int(size)},file.driver=nbd,file.server.type=unix,file.server.path={local}",
                ]
            convert = spawn(
                ["qemu-img", "convert", "-q", *source, "-O", "qcow2", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self._follow(convert, lambda: out.stat().st_blocks * 512 if out.exists() else 0, progress, cancelled)
            err = convert.stderr.read().decode(errors="replace").strip()
            convert.stderr.close()
            if convert.returncode != 0:
                raise SshError(f"Reading volume {path} from {self.target.where} over NBD failed: {err}")
            return out.stat().st_blocks * 512

    # ----- writing (restore) --------------------------------------------------------------

    def write_nbd(
        self, source: Path, path: str, fmt: str, *, zeroed: bool, progress: Callable[[int], None], cancelled
    ) -> None:
        """Write a local image's guest-visible content into a volume on the host: `qemu-nbd` on the
        host serves the volume writable (in its own format), a local `qemu-img convert -n` writes into
        it, leaving zero areas of a fresh volume untouched."""
        size = json.loads(
            subprocess.run(["qemu-img", "info", "--output=json", str(source)], capture_output=True, check=True).stdout
        )["virtual-size"]
        with self.nbd_tunnel(path, fmt, writable=True, what="opening volume") as local:
            done = [0]
            convert = spawn(
                [
                    "qemu-img",
                    "convert",
                    "-p",
                    "-n",
                    *(["--target-is-zero"] if zeroed else []),
                    "-O",
                    "raw",
                    str(source),
                    f"nbd+unix:///?socket={local}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            reader = threading.Thread(target=percent_reader, args=(convert.stdout, size, done), daemon=True)
            reader.start()
            self._follow(convert, lambda: done[0], progress, cancelled)
            reader.join()
            err = convert.stderr.read().decode(errors="replace").strip()
            convert.stderr.close()
            if convert.returncode != 0:
                raise SshError(f"Writing volume {path} on {self.target.where} over NBD failed: {err}")

    # ----- following a running copy -------------------------------------------------------

    def _follow(self, proc: subprocess.Popen, measure: Callable[[], int], progress, cancelled) -> None:
        """Wait for `proc`, telling its progress twice a second; a cancel request kills it."""
        try:
            while True:
                try:
                    proc.wait(0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(OSError):
                    progress(measure())
                if cancelled():
                    raise Cancelled()
            with contextlib.suppress(OSError):
                progress(measure())
        except BaseException:
            _stop(proc)
            raise


def _lvm_override(accept: list[str]) -> str:
    """`--config` for LVM that accepts exactly these device patterns and rejects the rest, over
    the host's own filter and devices file (as vdsm's lvm module builds it)."""
    patterns = ", ".join(f'"{p}"' for p in [*accept, "r|.*|"])
    # hints="none": LVM's scan hints (/run/lvm/hints) were written under the host's own filter.
    return "--config " + shlex.quote(f'devices {{ filter=[{patterns}] use_devicesfile=0 hints="none" }}')


# Both ends cycle a few fixed 1 MiB buffers through their threads: small enough to stay in the CPU's
# cache between the thread that fills one and the ones that hash and write it, and no new buffer to
# fault in for each chunk.
NETCAT_BUFFERS, NETCAT_BUFFER = 8, MiB
# The node writes each buffer to its file in pieces of this size. One write of 1 MiB makes the
# kernel put it in large page cache folios, which on a virtual machine whose freed memory goes back
# to the hypervisor come from memory it must fault in again: `dd bs=1M` of 1 GiB into a new file
# took 3.6 s of system time here, `bs=64K` 0.6 s (bs=16K 0.6, 128K 0.9, 512K 2.4, 2M 3.6), as
# OpenSSH and nc write. On bare metal the 15 more writes per MiB cost nothing that shows.
NETCAT_WRITE = 64 * 1024


def _netcat_sender(address: str, token: str, path: str, length: int | None) -> str:
    """The host's side, run with its python3 (on every oVirt host: vdsm is written in it): it binds
    port 0 and says which it got, sends the volume's first `length` bytes (all of it when None) to
    the first connection that gives the token, hashing them in a thread beside the sending one, and
    prints their SHA-256 last."""
    return (
        "import hashlib,os,queue,socket,sys,threading\n"
        f"if not os.path.exists({path!r}): sys.exit({MISSING})\n"
        f"s=socket.socket();s.bind(({address!r},0));s.listen(1);s.settimeout(60)\n"
        "print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept();c.settimeout(60)\n"
        f"if c.recv(32)!=b{token!r}: sys.exit('wrong token')\n"
        f"f=open({path!r},'rb',buffering=0);left={length!r};h=hashlib.sha256()\n"
        "free=queue.Queue();full=queue.Queue();err=None\n"
        f"for _ in range({NETCAT_BUFFERS}): free.put(memoryview(bytearray({NETCAT_BUFFER})))\n"
        "def read():\n"
        " global left,err\n"
        " try:\n"
        "  while True:\n"
        "   b=free.get();n=f.readinto(b if left is None else b[:min(len(b),left)])\n"
        "   full.put((b,n))\n"
        "   if not n: return\n"
        "   h.update(b[:n])\n"
        "   if left is not None: left-=n\n"
        " except BaseException as e:\n"
        "  err=e;full.put((None,0))\n"
        "t=threading.Thread(target=read,daemon=True);t.start()\n"
        "try:\n"
        " while (i:=full.get())[1]: c.sendall(i[0][:i[1]]);free.put(i[0])\n"
        "except OSError as e: sys.exit(f'sending failed, the node stopped taking the data: {e}')\n"
        # No hash after a failed read: what was sent is not the volume, and the node must not take it.
        "if err: sys.exit(f'reading the volume failed: {err}')\n"
        "c.shutdown(socket.SHUT_WR);c.close();t.join()\n"
        "if left: sys.exit('the volume ended early')\n"
        "print(h.hexdigest(),flush=True)\n"
    )


def _receive_hashed(
    sock: socket.socket, out: Path, *, progress: Callable[[int], None], cancelled: Callable[[], bool]
) -> tuple[int, str]:
    """Receive into `out` until the sender closes: this thread receives, one hashes (SHA-256), one
    writes, each chunk passed along in order. Returns the bytes received and their SHA-256; a failed
    write is raised as a RepositoryError naming the file."""
    free: queue.Queue = queue.Queue()
    received: queue.Queue = queue.Queue()
    hashed: queue.Queue = queue.Queue()
    for _ in range(NETCAT_BUFFERS):
        free.put(memoryview(bytearray(NETCAT_BUFFER)))
    digest = hashlib.sha256()
    failed: list[OSError] = []
    written = 0
    got = 0
    # Unbuffered, so that every write's error is seen by the writer; the close's too (NFS tells a
    # full server there).
    f = open(out, "wb", buffering=0)  # noqa: SIM115

    def hash_() -> None:
        try:
            while (item := received.get()) is not None:
                digest.update(item[0][: item[1]])
                hashed.put(item)
        finally:
            hashed.put(None)

    def write() -> None:
        nonlocal written
        while (item := hashed.get()) is not None:
            buffer, n = item
            try:
                done = 0
                while not failed and done < n:
                    done += f.write(buffer[done : min(done + NETCAT_WRITE, n)])
                if not failed:
                    start_writeback(f.fileno(), written, n)
                    written += n
            except OSError as e:
                failed.append(e)
            free.put(buffer)  # also after a failure, so that the receiver never waits for ever

    threads = [threading.Thread(target=hash_, daemon=True), threading.Thread(target=write, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        last = -math.inf  # the first chunk is told at once (and a cancel asked meanwhile seen)
        while True:
            buffer = free.get()
            if failed:
                break
            n = 0
            while n < len(buffer) and (r := sock.recv_into(buffer[n:])):
                n += r
            if not n:
                break
            received.put((buffer, n))
            got += n
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                progress(got)
                if cancelled():
                    raise Cancelled()
    finally:
        received.put(None)  # the hasher and the writer drain what is queued, then end before the file closes
        for thread in threads:
            thread.join()
        try:
            f.close()
        except OSError as e:
            failed.append(e)
    if failed:
        e = failed[0]
        cause = e.strerror or str(e)
        raise RepositoryError(f"Writing {out} failed: {cause}.")
    return got, digest.hexdigest()
