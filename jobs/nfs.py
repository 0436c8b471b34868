"""The node's NFS exporter: the shares a node serves to the hypervisors (the export storage domain's
staging share, an instant restore's temporary domain), one export per share, removed afterwards.
Never set up by hand.

Three kinds, chosen by NFS_EXPORTER:
- `ganesha` (the default): NFS-Ganesha in user space (Debian nfs-ganesha, nfs-ganesha-vfs), started,
  configured and stopped by the node. NFSv4 only over TCP, so it needs neither rpcbind nor the
  kernel's NFS server. Exports are added and removed with a reload (SIGHUP: Ganesha rereads its
  exports), not a restart, so the shares already in use are not disturbed.
  With NFS_NETNS (a network namespace's file: the simulator's hosts' storage network) Ganesha runs
  inside that namespace and serves NFSv3 too (qemu's nfs driver speaks only v3), registered with the
  rpcbind running there; every check of a port is made inside it, and 127.0.0.1 there is this node.
- `command`: the site's own NFS server, through its export and unexport commands.
- `off`: this node serves no share; asking for one fails, saying so.

An exporter keeps its state in a directory (the node's DATA_DIR/nfs): the exports it serves
(exports.json, the truth, written under a lock so a node's worker processes share it), and for
Ganesha its configuration, pid, log and NFSv4 recovery directory. Exports outlive a worker's
restart: a VM running from an instant restore's share must not lose it because a worker stopped.
Ganesha runs in its own session, and start() by any process of the node finds the running one.

Who writes decides who owns: the hypervisors' vdsm and qemu write as vdsm:kvm (36:36), and the
engine refuses a share it cannot write as them. Every export squashes every user to 36:36 (oVirt's
advice for NFS storage: all_squash, anonuid=36, anongid=36), and a writable export's directory is
given to 36:36; what is inside stays its maker's business: a file the hosts must read has to be
readable by 36:36 (or by all), and what they must write owned by 36:36.
"""

import ctypes
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import OperatorError

log = logging.getLogger("jobs")

VDSM_UID = 36  # vdsm on every oVirt host
KVM_GID = 36  # kvm
GANESHA_PACKAGES = "nfs-ganesha nfs-ganesha-vfs"
GANESHA_BINARY = "ganesha.nfsd"
KINDS = ("ganesha", "command", "off")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
MOUNT_PORT = 20048  # NFSv3's MOUNT service, where Debian's nfs-kernel-server puts it too (in NFS_NETNS)
CLONE_NEWNET = 0x40000000

# What the configuration and the commands may be handed: no quotes, braces, semicolons or blanks.
PSEUDO_RE = re.compile(r"^(/[A-Za-z0-9._@+-]+)+$")
CLIENT_RE = re.compile(r"^[A-Za-z0-9.:/*_@-]+$")


class NfsError(OperatorError):
    pass


@dataclass(frozen=True)
class Export:
    """One share: `directory` on this node, mounted by `clients` as ADDRESS:PSEUDO."""

    id: int
    directory: Path
    pseudo: str  # the path clients mount (Ganesha's NFSv4 pseudo path; the directory for a site's server)
    clients: tuple[str, ...]
    read_only: bool
    address: str
    port: int

    @property
    def share(self) -> str:
        """As an engine's NFS storage connection names it (address and path)."""
        return f"{self.address}:{self.pseudo}"

    def url(self, path: str = "") -> str:
        """libnfs' URL of the share or of a file in it (nfs-ls, nfs-cat, nfs-cp, qemu's nfs driver)."""
        return (
            f"nfs://{self.address}{self.pseudo}{'/' + path.lstrip('/') if path else ''}?version=4&nfsport={self.port}"
        )

    def to_json(self) -> dict:
        return {**asdict(self), "directory": str(self.directory), "clients": list(self.clients)}

    @classmethod
    def from_json(cls, data: dict) -> "Export":
        return cls(**{**data, "directory": Path(data["directory"]), "clients": tuple(data["clients"])})


@dataclass
class NfsExporter:
    """The exporter of NFS_EXPORTER=off, and what the others share: checking a request, recording
    the exports under a lock. A kind fills `_publish` and `_withdraw`."""

    state_dir: Path
    address: str = ""
    port: int = 2049
    kind = "off"

    def start(self) -> None:
        """Serve the recorded exports (nothing to start for `off` and `command`)."""

    def stop(self) -> None:
        """Stop serving; the recorded exports are served again at the next start()."""

    def running(self) -> bool:
        """Whether a server of the node's own runs now (only Ganesha is one)."""
        return False

    def export(self, *, directory: Path, pseudo: str, clients: list[str], read_only: bool = False) -> Export:
        """Share `directory` with `clients` (addresses, networks, host names) at `pseudo`."""
        directory = self._check(directory=directory, pseudo=pseudo, clients=clients)
        with self._locked():
            exports = self._load()
            for other in exports:
                if other.pseudo == pseudo or other.directory == directory:
                    raise NfsError(f"{other.directory} is already exported as {other.share}.")
            if not read_only:
                give_to_vdsm(directory)
            export = Export(
                id=self._next_id(),
                directory=directory,
                pseudo=pseudo,
                clients=tuple(clients),
                read_only=read_only,
                address=self.address,
                port=self.port,
            )
            self._publish(export, [*exports, export])
            self._save([*exports, export])
            export = replace(export, port=self._served_port())
        log.info("NFS export %s of %s to %s", export.share, directory, ", ".join(clients))
        return export

    def unexport(self, export: Export) -> None:
        """Stop sharing it; one already gone is fine (a cleanup may run twice)."""
        with self._locked():
            exports = self._load()
            kept = [e for e in exports if e.id != export.id]
            if len(kept) == len(exports):
                return
            self._withdraw(export, kept)
            self._save(kept)
        log.info("NFS export %s of %s removed", export.share, export.directory)

    def exports(self) -> list[Export]:
        with self._locked():
            return self._load()

    def _served_port(self) -> int:
        return self.port

    def _publish(self, export: Export, exports: list[Export]) -> None:
        """Serve `exports`, `export` among them."""
        raise NfsError("This node serves no NFS share (NFS_EXPORTER=off); set NFS_EXPORTER=ganesha or command.")

    def _withdraw(self, export: Export, exports: list[Export]) -> None:
        pass

    def _check(self, *, directory: Path, pseudo: str, clients: list[str]) -> Path:
        directory = Path(directory)
        if not directory.is_absolute():
            raise NfsError(f"The directory to export must be an absolute path, not {str(directory)!r}.")
        if not directory.exists():
            raise NfsError(f"The directory to export, {directory}, does not exist.")
        if not directory.is_dir():
            raise NfsError(f"{directory} is not a directory: only a directory can be exported.")
        directory = directory.resolve()
        if any(c in str(directory) for c in '"\\\n{};'):
            raise NfsError(f"{directory}: a directory to export may not hold quotes, backslashes, braces or ;.")
        if not PSEUDO_RE.match(pseudo):
            raise NfsError(f"{pseudo!r} is not an export path: /NAME[/NAME...] of letters, digits and ._@+-.")
        if not clients:
            raise NfsError("An export needs at least one client (an address, network or host name).")
        for client in clients:
            if not CLIENT_RE.match(client):
                raise NfsError(f"{client!r} is not a client: give an address, a network (10.0.0.0/24) or a host name.")
        return directory

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _recorded(self) -> dict:
        try:
            return json.loads((self.state_dir / "exports.json").read_text())
        except FileNotFoundError:
            return {"last_id": 0, "exports": []}

    def _load(self) -> list[Export]:
        """The recorded exports, reached where this exporter serves now (a free port changes)."""
        port = self._served_port()
        return [replace(Export.from_json(e), address=self.address, port=port) for e in self._recorded()["exports"]]

    def _next_id(self) -> int:
        # Never one a removed export had: a host's file handles name their export by its id.
        return max([self._recorded()["last_id"], *(e.id for e in self._load())]) + 1

    def _save(self, exports: list[Export]) -> None:
        last_id = max([self._recorded()["last_id"], *(e.id for e in exports)])
        recorded = {"last_id": last_id, "exports": [e.to_json() for e in exports]}
        write_atomically(self.state_dir / "exports.json", json.dumps(recorded, indent=1))


@dataclass
class GaneshaExporter(NfsExporter):
    """NFS-Ganesha run by the node: `bind` is the address it listens on (empty: all); `port` is where
    it serves: 0 picks a free port at the first start, which later starts keep (mounts come back)."""

    bind: str = ""
    binary: str = GANESHA_BINARY
    # A network namespace's file (NFS_NETNS): Ganesha serves in it, NFSv3 and v4; "": where the node runs.
    netns: str = ""
    _process: subprocess.Popen | None = field(default=None, repr=False)
    kind = "ganesha"

    def start(self) -> None:
        with self._locked():
            if self._pid() and not self._elsewhere():
                self.port = self._server()["port"]
                return
            if self._pid():
                # NFS_NETNS was made anew (a simulator restarted) or changed: the hosts cannot reach
                # the running one; a restart serves the same exports where they can.
                log.warning("NFS-Ganesha (pid %s) runs outside NFS_NETNS %s: restarted there", self._pid(), self.netns)
                self._stop()
            self._start()

    def _elsewhere(self) -> bool:
        """Whether the running Ganesha serves in another network namespace than NFS_NETNS says."""
        try:
            here = os.stat(self.netns).st_ino if self.netns else os.stat("/proc/self/ns/net").st_ino
            return os.stat(f"/proc/{self._pid()}/ns/net").st_ino != here
        except OSError:
            return bool(self.netns)  # NFS_NETNS gone: _start says so

    def stop(self) -> None:
        with self._locked():
            self._stop()

    def running(self) -> bool:
        return bool(self._pid())

    def _stop(self) -> None:
        pid = self._pid()
        if self._process is not None and self._process.poll() is not None:
            self._process = None  # ended on its own: reaped
        if pid:
            os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(pid, STOP_TIMEOUT):
                log.warning("NFS-Ganesha (pid %s) did not stop within %.0f s: killed", pid, STOP_TIMEOUT)
                os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, STOP_TIMEOUT)
        (self.state_dir / "server.json").unlink(missing_ok=True)

    def _publish(self, export: Export, exports: list[Export]) -> None:
        if not self._pid():
            self._start(exports)
            return
        try:
            self._reload(exports)
        except NfsError:
            # Ganesha keeps serving the others: its configuration goes back to what it serves.
            self._write_config(
                [e for e in exports if e.id != export.id], self.port, self._server().get("mount_port", 0)
            )
            raise

    def _served_port(self) -> int:
        if self._pid():
            self.port = self._server()["port"]
        return self.port

    def _withdraw(self, export: Export, exports: list[Export]) -> None:
        if self._pid():
            self._reload(exports)
        else:
            self._write_config(exports, self.port, 0)

    # Ganesha itself

    @property
    def _bind(self) -> str:
        # In NFS_NETNS every address: the namespace has only loopback, and Ganesha's resolver refuses
        # even 127.0.0.1 there (getaddrinfo's AI_ADDRCONFIG counts no loopback address).
        return "" if self.netns else self.bind

    @property
    def config_path(self) -> Path:
        return self.state_dir / "ganesha.conf"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "ganesha.log"

    def _start(self, exports: list[Export] | None = None) -> None:
        binary = shutil.which(self.binary)
        if binary is None or not fsal_vfs_installed():
            raise NfsError(
                f"NFS-Ganesha is not installed on this node: install the Debian packages {GANESHA_PACKAGES} "
                "(apt-get install --no-install-recommends), or set NFS_EXPORTER=command to use the site's NFS server."
            )
        if self.netns and not Path(self.netns).exists():
            raise NfsError(
                f"NFS_NETNS names {self.netns}, which does not exist: the network namespace to serve in is gone "
                "(is the simulated engine whose hosts' storage network it is running?)."
            )
        port = self.port or free_port(self._bind or "127.0.0.1", netns=self.netns)
        if not port_free(self._bind, port, netns=self.netns):
            raise NfsError(
                f"Port {port} is taken by another process: NFS-Ganesha cannot listen on it. Stop the NFS server "
                "holding it (Debian's own service: systemctl disable --now nfs-ganesha) or set NFS_PORT."
            )
        mount_port = 0
        if self.netns:
            # NFSv3 needs its MOUNT service somewhere: the usual port, unless another server holds it.
            mount_port = (
                MOUNT_PORT if port_free(self._bind, MOUNT_PORT, netns=self.netns) else free_port(netns=self.netns)
            )
        (self.state_dir / "recovery").mkdir(parents=True, exist_ok=True)
        self._write_config(self._load() if exports is None else exports, port, mount_port)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        pid_file = self.state_dir / "ganesha.pid"
        started = time.monotonic()
        with open(self.log_path, "ab") as out:
            # Its own session: a worker stopped with Ctrl-C or restarted leaves the shares served.
            process = subprocess.Popen(
                self._in_netns_argv(
                    [binary, "-F", "-f", str(self.config_path), "-L", str(self.log_path), "-p", str(pid_file)]
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        while not port_accepts(self._bind or "127.0.0.1", port, netns=self.netns):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                raise NfsError(
                    f"NFS-Ganesha stopped at start (exit status {process.returncode}); its log ends:\n"
                    + log_tail(self.log_path, offset)
                )
            time.sleep(0.02)
        self._process = process
        self.port = port
        server = {"pid": process.pid, "port": port, "mount_port": mount_port, "netns": self.netns}
        write_atomically(self.state_dir / "server.json", json.dumps(server))
        log.info(
            "NFS-Ganesha started on port %s%s in %.2f s (pid %s)",
            port,
            f" in network namespace {self.netns}" if self.netns else "",
            time.monotonic() - started,
            process.pid,
        )

    def _in_netns_argv(self, argv: list[str]) -> list[str]:
        """Ganesha's command line, inside NFS_NETNS when set. There it registers its NFSv3 services with
        that namespace's rpcbind, over TCP 127.0.0.1:111: libtirpc asks a local rpcbind through the
        unix socket /run/rpcbind.sock first, which is the machine's (a rpcbind of its own), so Ganesha
        gets a private mount namespace where that socket, if any, is hidden."""
        if not self.netns:
            return argv
        hide = 'if [ -S /run/rpcbind.sock ]; then mount --bind /dev/null /run/rpcbind.sock; fi; exec "$@"'
        return [
            "nsenter",
            f"--net={self.netns}",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            hide,
            "sh",
            *argv,
        ]

    def _reload(self, exports: list[Export]) -> None:
        """Rewrite the exports and have Ganesha reread them (SIGHUP): the shares in use stay up."""
        server = self._server()
        self.port = server["port"]
        offset = self.log_path.stat().st_size
        self._write_config(exports, server["port"], server.get("mount_port", 0))
        os.kill(server["pid"], signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT
        while "Reread exports complete" not in (tail := log_tail(self.log_path, offset, lines=0)):
            if time.monotonic() > deadline or not self._pid():
                raise NfsError(
                    "NFS-Ganesha did not reload its exports; its log ends:\n" + log_tail(self.log_path, offset)
                )
            time.sleep(0.01)
        # "DATE : epoch E : HOST : ganesha.nfsd-PID[THREAD] function :COMPONENT :CRIT :what", each once.
        # What other threads log meanwhile is no answer to the reload: DBUS (absent here) and the NFSv4
        # callback channel's Kerberos lookups ("NFS CB"), which a client's connection starts at any time.
        unrelated = ("DBUS", ":NFS CB :")
        problems = [
            line.split("] ", 1)[-1]
            for line in tail.splitlines()
            if ":CRIT :" in line and not any(part in line for part in unrelated)
        ]
        if problems:
            said = "\n".join(dict.fromkeys(problems))  # each once, first first
            raise NfsError(f"NFS-Ganesha refused its new exports:\n{said}")

    def _write_config(self, exports: list[Export], port: int, mount_port: int) -> None:
        """Ganesha's configuration; `mount_port` is the MOUNT service's (NFSv3, in NFS_NETNS only; 0:
        not known yet, the next start picks it)."""
        bind = f" Bind_addr = {self._bind};" if self._bind else ""
        # NFSv4 only: no rpcbind, no NLM, no rquota (without Enable_RQUOTA = false Ganesha exits at
        # start, rc 2, saying nothing). In NFS_NETNS NFSv3 too, with its MOUNT service, for qemu.
        protocols = "3, 4" if self.netns else "4"
        mount = f" MNT_Port = {mount_port};" if self.netns and mount_port else ""
        blocks = [
            "# Written by the backup service's node (jobs/nfs.py) at every change: edits are lost.",
            # Graceless: after a restart clients go on at once.
            f"NFS_CORE_PARAM {{ NFS_Port = {port};{mount}{bind} Protocols = {protocols}; Enable_UDP = false;"
            " Enable_NLM = false; Enable_RQUOTA = false; }",
            "NFS_KRB5 { Active_krb5 = false; }",
            f'NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{self.state_dir / "recovery"}";'
            " Only_Numeric_Owners = true; }",
        ]
        for e in exports:
            blocks.append(
                f'EXPORT {{ Export_Id = {e.id}; Path = "{e.directory}"; Pseudo = "{e.pseudo}"; Access_Type = None;'
                f" Squash = All_Squash; Anonymous_Uid = {VDSM_UID}; Anonymous_Gid = {KVM_GID}; SecType = sys;"
                f" Protocols = {protocols}; Transports = TCP; CLIENT {{ Clients = {', '.join(e.clients)};"
                f" Access_Type = {'RO' if e.read_only else 'RW'}; }} FSAL {{ Name = VFS; }} }}"
            )
        write_atomically(self.config_path, "\n".join(blocks) + "\n")

    def _server(self) -> dict:
        try:
            return json.loads((self.state_dir / "server.json").read_text())
        except FileNotFoundError:
            return {}

    def _pid(self) -> int | None:
        """The pid of this state directory's running Ganesha, if any (a reused pid is not it)."""
        pid = self._server().get("pid")
        if not pid:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        if state == "Z" or str(self.config_path).encode() not in cmdline:
            return None
        return pid

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self._process = None
            return True
        deadline = time.monotonic() + timeout
        while self._pid() == pid:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


@dataclass
class CommandExporter(NfsExporter):
    """The site's own NFS server: `export_command` and `unexport_command` are argument lists (no
    shell) whose {path}, {clients} (comma-separated) and {options} (exports(5) options) are filled in.
    The share is mounted at the directory's own path."""

    export_command: str = ""
    unexport_command: str = ""
    kind = "command"

    def export(self, *, directory: Path, pseudo: str = "", clients: list[str], read_only: bool = False) -> Export:
        # A site's server exports the directory at its own path; `pseudo` is Ganesha's.
        return super().export(
            directory=directory, pseudo=str(Path(directory).resolve()), clients=clients, read_only=read_only
        )

    def _publish(self, export: Export, exports: list[Export]) -> None:
        self._run("NFS_EXPORT_COMMAND", self.export_command, export)

    def _withdraw(self, export: Export, exports: list[Export]) -> None:
        self._run("NFS_UNEXPORT_COMMAND", self.unexport_command, export)

    def _run(self, name: str, template: str, export: Export) -> None:
        if not template.strip():
            raise NfsError(f"NFS_EXPORTER=command needs {name}, the site's command (see the README's settings).")
        options = ("ro" if export.read_only else "rw") + f",sync,all_squash,anonuid={VDSM_UID},anongid={KVM_GID}"
        values = {"{path}": str(export.directory), "{clients}": ",".join(export.clients), "{options}": options}
        argv = [fill(arg, values) for arg in shlex.split(template)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NfsError(f"{name} ({argv[0]}) could not run: {e}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-2000:]
            raise NfsError(f"{name} failed (exit status {done.returncode}) for {export.directory}: {said}")


def node_exporter() -> NfsExporter:
    """This node's exporter, as its settings say."""
    from django.conf import settings

    state_dir = settings.DATA_DIR / "nfs"
    # In NFS_NETNS only loopback reaches the node: the hosts there mount 127.0.0.1.
    address = "127.0.0.1" if settings.NFS_NETNS else settings.NFS_ADDRESS
    if settings.NFS_EXPORTER == "ganesha":
        return GaneshaExporter(
            state_dir=state_dir,
            address=address,
            port=settings.NFS_PORT,
            bind=settings.NFS_BIND,
            netns=settings.NFS_NETNS,
        )
    if settings.NFS_EXPORTER == "command":
        return CommandExporter(
            state_dir=state_dir,
            address=address,
            port=settings.NFS_PORT,
            export_command=settings.NFS_EXPORT_COMMAND,
            unexport_command=settings.NFS_UNEXPORT_COMMAND,
        )
    return NfsExporter(state_dir=state_dir, address=address)


def give_to_vdsm(directory: Path) -> None:
    """The hosts write as vdsm:kvm: the share's own directory must be theirs."""
    st = directory.stat()
    if (st.st_uid, st.st_gid) == (VDSM_UID, KVM_GID):
        return
    try:
        os.chown(directory, VDSM_UID, KVM_GID)
    except OSError as e:
        raise NfsError(
            f"{directory} must be owned by vdsm:kvm ({VDSM_UID}:{KVM_GID}) for the hosts to write to it, "
            f"and could not be given to them: {e.strerror}."
        ) from None


def fsal_vfs_installed() -> bool:
    """Ganesha's VFS backend (Debian nfs-ganesha-vfs) is a separate package from the server."""
    return any(Path("/usr/lib").glob("*/ganesha/libfsalvfs.so")) or any(Path("/usr/lib").glob("ganesha/libfsalvfs.so"))


def fill(arg: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        arg = arg.replace(placeholder, value)
    return arg


def in_netns(netns: str, fn):
    """fn() run in a network namespace ("": here): by a thread of its own that entered it (a
    thread's namespace is its own, and so are the sockets it makes)."""
    if not netns:
        return fn()
    result: dict = {}

    def run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise NfsError(f"Cannot enter NFS_NETNS {netns}: {os.strerror(ctypes.get_errno())}.")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run, name="nfs-netns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def free_port(host: str = "127.0.0.1", *, netns: str = "") -> int:
    def pick() -> int:
        with socket.socket() as s:
            s.bind((host, 0))
            return s.getsockname()[1]

    return in_netns(netns, pick)


def port_free(host: str, port: int, *, netns: str = "") -> bool:
    def check() -> bool:
        with socket.socket(socket.AF_INET6 if ":" in host or not host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host or "::", port))
            except OSError:
                return False
        return True

    return in_netns(netns, check)


def port_accepts(host: str, port: int, *, netns: str = "") -> bool:
    def connect() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return in_netns(netns, connect)


def log_tail(path: Path, offset: int = 0, *, lines: int = 15) -> str:
    """What the log says since `offset`: its last `lines` lines (0: all of it)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) if lines else text


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
