"""Hosts you can log in to: one real OpenSSH sshd per simulated host.

Each host gets its own loopback address (127.0.1.N, kept in the host record, so the engine reports
it as the host's `address`), its own ed25519 host key under `STATE/hosts/HOST_ID/` (stable across
restarts), and `root` may log in with the keys in `STATE/hosts/authorized_keys`, or with a password
when one is set for that host (`set_password`: as an oVirt host that was added with root's password
and no key). The password is checked against the host's own shadow file, bind-mounted over
`/etc/shadow` inside its namespace: the machine's root account is never touched.

The host sees the file storage domains where vdsm mounts them:
`/rhev/data-center/mnt/SERVER:_PATH/SD_ID` (the NFS export `SERVER:/PATH` with its slashes made
underscores; a GlusterFS volume `SERVER:/VOLUME` under `mnt/glusterSD/`) and
`/rhev/data-center/DC_ID/SD_ID` links to it. The sshd runs in a private mount
namespace (`unshare --mount`; `--uts` too, for the host's own name) with a tmpfs on `/rhev` and a
bind mount of the simulator's `storage/SD_ID` at that place, so a login on the host reads the very
files the engine writes, and nothing outside the namespace changes (but an empty `/rhev` directory to mount on).

Host faults are switches: the sshd down, the host refusing every key, a changed host key (as after
a reinstall), and a disk's image directory gone from the host's view.
"""

import base64
import binascii
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from ovirtsim import volume_meta
from ovirtsim.errors import EngineFault, bad_request
from ovirtsim.processes import spawn_with_engine

log = logging.getLogger("ovirtsim.hosts")

SSHD = "/usr/sbin/sshd"
RHEV = Path("/rhev")
KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}


class HostError(RuntimeError):
    pass


# ----- authorized keys (work whether or not the simulator runs) ---------------------------


def hosts_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "hosts"


def parse_public_key(text: str) -> str:
    """The key as an authorized_keys line ("TYPE BASE64 [comment]"); ValueError in words otherwise."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError('Expected an SSH public key as "ssh-ed25519 AAAA... [comment]".')
    key_type, blob = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"Unknown SSH key type {key_type!r}; expected one of {', '.join(sorted(KEY_TYPES))}.")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("The SSH public key's data is not base64.") from None
    # The blob starts with its own type name (a length-prefixed string): catches a cut-off paste.
    name_length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if raw[4 : 4 + name_length].decode(errors="replace") != key_type:
        raise ValueError(f"The SSH public key's data is not a {key_type} key.")
    if any(c in text.strip() for c in "\r\n"):
        raise ValueError("Give one SSH public key, on one line.")
    return " ".join(parts)


@contextlib.contextmanager
def _locked(state_dir: Path):
    directory = hosts_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield directory


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _authorized(directory: Path) -> list[str]:
    try:
        return [line for line in (directory / "authorized_keys").read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _publish_keys(directory: Path) -> None:
    """Each host's own authorized_keys: the site-wide list, or nothing on a host that refuses keys."""
    keys = _authorized(directory)
    for host_dir in directory.iterdir():
        if host_dir.is_dir():
            refused = (host_dir / "refuse_keys").exists()
            _write(host_dir / "authorized_keys", "" if refused else "".join(f"{k}\n" for k in keys))


def authorize_key(state_dir: Path, public_key: str) -> bool:
    """Let `public_key` log in as root on every host (now and hosts made later). False if it already could."""
    line = parse_public_key(public_key)
    blob = line.split()[1]
    with _locked(state_dir) as directory:
        keys = _authorized(directory)
        added = not any(k.split()[1] == blob for k in keys)
        if added:
            keys.append(line)
            _write(directory / "authorized_keys", "".join(f"{k}\n" for k in keys))
        _publish_keys(directory)
    return added


def host_key_fingerprint(public_key_line: str) -> str:
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def nfs_mount_dir(address: str, export_path: str) -> str:
    """Where vdsm mounts `address:export_path`: /rhev/data-center/mnt/ADDRESS:_EXPORT_PATH."""
    return f"/rhev/data-center/mnt/{address}:{export_path.replace('/', '_')}"


def domain_mount_dir(sd: dict) -> str:
    """Where vdsm mounts a file domain's storage: GlusterFS volumes under mnt/glusterSD/, the rest
    (NFS, POSIX) directly under mnt/."""
    mount_dir = nfs_mount_dir(sd["address"], sd["export_path"])
    if sd.get("storage_type") == "glusterfs":
        return mount_dir.replace("/mnt/", "/mnt/glusterSD/", 1)
    return mount_dir


# ----- one host's sshd ----------------------------------------------------------------


class HostSshd:
    def __init__(self, hosts: "Hosts", host: dict):
        self.hosts = hosts
        self.host_id = host["id"]
        self.name = host["name"]
        self.address = host["address"]
        self.dir = hosts_dir(hosts.state_dir) / host["id"]
        self.run_dir = hosts.run_dir / host["id"][:8]
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.hidden: set[str] = set()

    @property
    def key_file(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def shadow_file(self) -> Path:
        return self.dir / "shadow"

    def ensure_shadow(self) -> None:
        if not self.shadow_file.exists():
            self.set_password(None)

    def set_password(self, password: str | None) -> None:
        """Root's password on this host (None: none, so only keys log in). Written in place, not
        replaced: the running sshd's namespace has this very file bind-mounted over /etc/shadow, and
        sshd reads it at each login, so the change takes effect without a restart."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if password:
            hashed = subprocess.run(
                ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=True
            ).stdout.strip()
        else:
            hashed = "*"  # no password matches; not "!", which sshd takes for a locked account (keys refused too)
        fd = os.open(self.shadow_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"root:{hashed}:19000:0:99999:7:::\n")

    @property
    def has_password(self) -> bool:
        try:
            return not self.shadow_file.read_text().split(":")[1].startswith("*")
        except (FileNotFoundError, IndexError):
            return False

    @property
    def public_key(self) -> str:
        return " ".join(self.key_file.with_suffix(".pub").read_text().split()[:2])

    def ensure_key(self, *, renew: bool = False) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if renew:
            self.key_file.unlink(missing_ok=True)
            self.key_file.with_suffix(".pub").unlink(missing_ok=True)
        if not self.key_file.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", str(self.key_file)],
                check=True,
                capture_output=True,
            )

    def _config(self, port: int) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "sshd_config"

        def q(path) -> str:
            return '"' + str(path) + '"'

        _write(
            config,
            "\n".join(
                [
                    f"ListenAddress {self.address}:{port}",
                    f"HostKey {q(self.key_file)}",
                    f"PidFile {q(self.run_dir / 'sshd.pid')}",
                    f"AuthorizedKeysFile {q(self.dir / 'authorized_keys')}",
                    # As on an oVirt host: root logs in with a key, or with its password where it has one
                    # (the host's own shadow file, see set_password).
                    "PermitRootLogin yes",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    # The state directory may sit under /tmp, which StrictModes refuses.
                    "StrictModes no",
                    "PrintMotd no",
                    "MaxStartups 100:30:200",
                    "Subsystem sftp internal-sftp",
                    "SetEnv " + " ".join(f"{k}={v}" for k, v in self.hosts.engine.lvm.host_environment().items()),
                    "",
                ]
            ),
        )
        return config

    def _mount_script(self) -> tuple[str, list[str]]:
        """The shell script that builds the host's /rhev in the new mount namespace, then runs sshd."""
        lines = [
            "set -e",
            'hostname "$1"',
            'mount -t tmpfs -o mode=0755 rhev "$2"',
            'mount --bind "$3" /etc/shadow',  # root's password on this host, none by default
            "shift 3",
        ]
        args = [self.name, str(RHEV), str(self.shadow_file)]
        for sd in self.hosts.file_domains(self.host_id):
            mount_dir = f"{domain_mount_dir(sd)}/{sd['id']}"
            pool_link = f"/rhev/data-center/{sd['dc_id']}/{sd['id']}"
            lines.append(
                f"mkdir -p {shlex.quote(mount_dir)} {shlex.quote(os.path.dirname(pool_link))}"
                f" && mount --bind {shlex.quote(sd['path'])} {shlex.quote(mount_dir)}"
                f" && ln -s {shlex.quote(mount_dir)} {shlex.quote(pool_link)}"
            )
        # Block domains: the host's own /dev with /dev/VG/LV for the LVs active on it, and its LVM commands.
        lines += self.hosts.engine.lvm.host_setup_script(self.host_id, self.run_dir)
        lines.append('exec "$@"')
        return "\n".join(lines), args

    def start(self, *, save: bool = True) -> None:
        self.ensure_key()
        self.ensure_shadow()
        wanted = self.hosts.port
        if wanted is None and self.port:
            wanted = self.port  # the port of the last run, if it is still free
        for _attempt in range(20):
            port = wanted if wanted is not None else _free_port(self.address)
            if self._try_start(port):
                self.port = port
                self.hosts.record_ssh(self.host_id, port, self.public_key, save=save)
                for disk_id in self.hidden:
                    self._hide(disk_id)
                return
            if self.hosts.port is not None:
                raise HostError(f"sshd of {self.name} cannot listen on {self.address}:{port}: {self._last_error}")
            wanted = None  # another process took the port between the probe and sshd's bind: pick another
        raise HostError(f"sshd of {self.name} did not start: {self._last_error}")

    def _try_start(self, port: int) -> bool:
        config = self._config(port)
        script, args = self._mount_script()
        self._last_error = ""
        # Dies with the simulator, killed or not: a killed one must not leave the port taken.
        self.proc = spawn_with_engine(
            ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script, "sh", *args]
            + [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        log_file = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (the pump thread closes it)
        # sshd says on stderr when it listens or why it cannot: that line is the readiness signal.
        for raw in iter(self.proc.stderr.readline, b""):
            log_file.write(raw)
            line = raw.decode(errors="replace").strip()
            if line.startswith("Server listening on"):
                threading.Thread(target=_pump, args=(self.proc.stderr, log_file), daemon=True).start()
                return True
            if line and (not self._last_error or "error" in line.lower() or "fatal" in line.lower()):
                self._last_error = line  # sshd's own complaint, else the first word of the mount script
        log_file.close()
        self.proc.wait()
        self.proc = None
        if not self._last_error:
            self._last_error = f"sshd exited (see {self.dir / 'sshd.log'})"
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        # The listener and its connections share the process group made for it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def image_dir(self, disk_id: str) -> str:
        disk = self.hosts.engine.store["disks"].get(disk_id)
        if disk is None:
            raise HostError(f"no disk {disk_id}")
        sd = self.hosts.engine.store["storagedomains"][disk["sd_id"]]
        if sd["block"]:
            raise HostError(f"disk {disk_id} is on block storage; only file domain paths can disappear")
        return f"{domain_mount_dir(sd)}/{sd['id']}/images/{disk_id}"

    def _nsenter(self, *command: str) -> None:
        result = subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-m", *command], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise HostError(f"{' '.join(command)} on {self.name} failed: {result.stderr.strip()}")

    def _hide(self, disk_id: str) -> None:
        # An empty read-only tmpfs over the image directory: the host sees no volumes there.
        path = self.image_dir(disk_id)
        self._nsenter("mount", "-t", "tmpfs", "-o", "ro,size=4k", "gone", path)

    def hide_image(self, disk_id: str, hidden: bool) -> None:
        if hidden and disk_id not in self.hidden:
            if self.running:
                self._hide(disk_id)
            self.hidden.add(disk_id)
        elif not hidden and disk_id in self.hidden:
            if self.running:
                self._nsenter("umount", self.image_dir(disk_id))
            self.hidden.discard(disk_id)


def _pump(stream, log_file) -> None:
    with log_file:
        for raw in iter(stream.readline, b""):
            log_file.write(raw)
            log_file.flush()


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# ----- all hosts ----------------------------------------------------------------------


class Hosts:
    """The sshds of an engine's hosts; started and stopped with the simulator."""

    def __init__(self, engine, state_dir: Path, run_dir: Path, *, port: int | None = None):
        self.engine = engine
        self.state_dir = Path(state_dir)
        self.run_dir = Path(run_dir)
        self.port = port
        self.sshds: dict[str, HostSshd] = {}
        self._lock = threading.RLock()

    def file_domains(self, host_id: str) -> list[dict]:
        with self.engine.store.lock:
            host = self.engine.store["hosts"][host_id]
            cluster = self.engine.store["clusters"].get(host.get("cluster_id"))
            dc_id = cluster["dc_id"] if cluster else None
            return [
                dict(sd)
                for sd in self.engine.store["storagedomains"].values()
                if not sd["block"] and sd.get("address") and sd.get("export_path") and sd.get("dc_id") == dc_id
            ]

    def record_ssh(self, host_id: str, port: int, public_key: str, *, save: bool = True) -> None:
        with self.engine.store.lock:
            host = self.engine.store["hosts"][host_id]
            host["ssh_port"] = port
            host["ssh_fingerprint"] = host_key_fingerprint(public_key)
            host["ssh_public_key"] = public_key
            if save:
                self.engine.store.save()

    def _assign_addresses(self) -> None:
        with self.engine.store.lock:
            hosts = sorted(self.engine.store["hosts"].values(), key=lambda h: (h["name"], h["id"]))
            taken = {h["address"] for h in hosts if h.get("address", "").startswith("127.0.1.")}
            n = 1
            for host in hosts:
                if host.get("address", "").startswith("127.0.1."):
                    continue
                while f"127.0.1.{n}" in taken:
                    n += 1
                if n > 254:
                    raise HostError("more than 254 hosts do not fit in 127.0.1.0/24")
                host["address"] = f"127.0.1.{n}"
                taken.add(host["address"])
            self.engine.store.save()

    def start(self) -> None:
        if not os.path.exists(SSHD):
            raise HostError(f"{SSHD} is missing: install openssh-server")
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
        try:
            RHEV.mkdir(exist_ok=True)
        except OSError as e:
            raise HostError(f"cannot make {RHEV} to mount the hosts' storage view on: {e}") from None
        self._assign_addresses()
        with self.engine.store.lock:
            hosts = [dict(h) for h in self.engine.store["hosts"].values()]
            disks = list(self.engine.store["disks"].values())
        for disk in disks:  # state from before `.meta` files were kept
            volume_meta.write_disk_meta(self.engine, disk)
        with _locked(self.state_dir):
            for host in hosts:
                sshd = HostSshd(self, host)
                sshd.ensure_key()
                if self.port is None and host.get("ssh_port") not in (None, 22):
                    sshd.port = host["ssh_port"]
                self.sshds[host["id"]] = sshd
            _publish_keys(hosts_dir(self.state_dir))
        try:
            # Side by side (each waits for its sshd's "listening" line) and one save for all: a save
            # writes the whole store, and the `large` seed's 60 hosts took 11 s one after another.
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                for started in [pool.submit(sshd.start, save=False) for sshd in self.sshds.values()]:
                    started.result()
            self.engine.store.save()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self._lock:
            for sshd in self.sshds.values():
                sshd.stop()
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def get(self, ref: str) -> HostSshd:
        for sshd in self.sshds.values():
            if ref in (sshd.host_id, sshd.name):
                return sshd
        raise HostError(f"no host {ref!r}")

    def info(self) -> list[dict]:
        return [
            {
                "id": s.host_id,
                "name": s.name,
                "address": s.address,
                "port": s.port,
                "host_key": s.public_key,
                "fingerprint": host_key_fingerprint(s.public_key),
                "running": s.running,
                "hidden_images": sorted(s.hidden),
                "root_password": s.has_password,
            }
            for s in self.sshds.values()
        ]

    def set_password(self, ref: str, password: str | None) -> dict:
        """Root's password on one host (None or "": keys only again)."""
        with self._lock:
            sshd = self.get(ref)
            sshd.set_password(password or None)
            return next(i for i in self.info() if i["id"] == sshd.host_id)

    def set_faults(self, ref: str, switches: dict) -> dict:
        """sshd_down, refuse_keys (bools), change_host_key (true), hide_image / show_image (a disk id)."""
        unknown = set(switches) - {"sshd_down", "refuse_keys", "change_host_key", "hide_image", "show_image"}
        if unknown:
            raise ValueError(f"unknown host fault switch {', '.join(sorted(unknown))}")
        with self._lock:
            sshd = self.get(ref)
            if "refuse_keys" in switches:
                with _locked(self.state_dir) as directory:
                    marker = sshd.dir / "refuse_keys"
                    if switches["refuse_keys"]:
                        marker.touch()
                    else:
                        marker.unlink(missing_ok=True)
                    _publish_keys(directory)
            if switches.get("change_host_key"):
                was_running = sshd.running
                sshd.stop()
                sshd.ensure_key(renew=True)
                if was_running:
                    sshd.start()
                else:
                    self.record_ssh(sshd.host_id, sshd.port, sshd.public_key)
            if "sshd_down" in switches:
                if switches["sshd_down"]:
                    sshd.stop()
                elif not sshd.running:
                    sshd.start()
            if switches.get("hide_image"):
                sshd.hide_image(switches["hide_image"], True)
            if switches.get("show_image"):
                sshd.hide_image(switches["show_image"], False)
            return next(i for i in self.info() if i["id"] == sshd.host_id)


def handle_control(engine, path: str, data: dict) -> bytes:
    """`/ovirtsim/control/hosts/*`: authorize-key, faults, password, info."""
    hosts: Hosts | None = getattr(engine, "hosts_ssh", None)
    name = path.rsplit("/", 1)[-1]
    try:
        if name == "authorize-key":
            added = authorize_key(engine.dir, str(data.get("key", "")))
            return json.dumps({"added": added}).encode()
        if hosts is None:
            raise HostError("this engine runs without host sshds")
        if name == "faults":
            return json.dumps(hosts.set_faults(str(data.pop("host", "")), data)).encode()
        if name == "password":
            password = data.get("password")
            if password is not None and not isinstance(password, str):
                raise ValueError("password must be a string, or null for none")
            return json.dumps(hosts.set_password(str(data.get("host", "")), password)).encode()
        if name == "info":
            return json.dumps(hosts.info()).encode()
    except (ValueError, HostError) as e:
        raise bad_request(str(e)) from None
    raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")
