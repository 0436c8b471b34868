"""OpenSSH (the `ssh` program) to a host with a stored key or password and a pinned host key, for bulk data.

paramiko moves data at about half OpenSSH's speed here (FIELD-NOTES), so data paths run `ssh`
as a subprocess: the key written to a 0600 file in a private temporary directory, a known_hosts
file holding only the pinned host key, `StrictHostKeyChecking yes` and `BatchMode yes` (never a
prompt), no user or system configuration (`-F /dev/null`). A host that logs in with a password
only gets it from OpenSSH's askpass hook instead (`SSH_ASKPASS_REQUIRE=force`, the password in a
0600 file of that directory, read by core/askpass.sh; one prompt, no other): `BatchMode` would
refuse to ask at all, and the password never appears in a command line or the environment.
Failures are worded from ssh's own messages: sshd down, key or password refused, host key
changed, and the remote command's error.
"""

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import OperatorError

# The fastest cipher measured here first; the others keep hosts with a narrower list working.
CIPHERS = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr"
DIR_PREFIX = "ovirt-backup-ssh-"
PR_SET_PDEATHSIG = 1
SSH_FAILED = 255  # ssh's own exit status when it could not run the command
# Prints the password of the file named by PASSWORD_FILE_VARIABLE: ssh runs it when it asks for one.
ASKPASS = Path(__file__).with_name("askpass.sh")
PASSWORD_FILE_VARIABLE = "OVIRT_BACKUP_SSH_PASSWORD_FILE"


class SshError(OperatorError):
    """SSH to a host failed, or a command on it did; worded for the administrator."""

    def __init__(self, message: str, *, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode  # the remote command's exit status (255: ssh itself failed)


@dataclass(frozen=True)
class SshTarget:
    address: str
    port: int
    user: str
    private_key: str = field(repr=False)  # OpenSSH or PEM text; "" to log in with the password
    host_key: str  # "TYPE BASE64", pinned
    name: str = ""  # the host's name in messages
    password: str = field(default="", repr=False)  # used only when there is no key

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}" + (f" (host {self.name})" if self.name else "")


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """A child process that is killed when the thread that started it ends (a worker killed -9)."""
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)


# A control socket's path must fit a unix socket address (108 bytes with its NUL): a long TMPDIR
# (a service's private temporary directory, a test's) would leave OpenSSH unable to make it.
SOCKET_PATH_MAX = 107
SHORT_ROOT = Path("/tmp")


def workers_root() -> Path:
    """Where each connection's directory goes: TMPDIR, unless its path leaves no room for the socket."""
    root = Path(tempfile.gettempdir())
    longest = len(f"{root}/{DIR_PREFIX}{2**22}-xxxxxxxx/control")
    return root if longest <= SOCKET_PATH_MAX else SHORT_ROOT


def _remove_dead_workers_files() -> None:
    for path in workers_root().glob(f"{DIR_PREFIX}*-*"):
        pid = path.name[len(DIR_PREFIX) :].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _private_file(path: Path, text: str) -> Path:
    """`text` in a new file only this user can read (in the 0700 directory of one connection)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _host_key_algorithms(key_type: str) -> str:
    if key_type == "ssh-rsa":
        return "rsa-sha2-512,rsa-sha2-256,ssh-rsa"
    return key_type


class OpenSsh:
    """The files `ssh` needs for one target, removed on close; commands built and run from them."""

    def __init__(self, target: SshTarget):
        if not target.private_key and not target.password:
            raise SshError(f"No SSH key or password is set for {target.where}; set the host's credentials.")
        if len(target.host_key.split()) < 2:
            raise SshError(f"The SSH host key of {target.where} is not known yet; log in once to learn it.")
        self.target = target
        _remove_dead_workers_files()
        # Named by this process, so that what a worker killed -9 left (a private key) is removed by the next.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=workers_root()))  # mode 0700
        if target.private_key:
            key = _private_file(self.dir / "key", target.private_key.rstrip("\n") + "\n")
            # Never a prompt: a key that is refused fails at once.
            login = ["-i", str(key), "-o", "BatchMode=yes"]
            self._env: list[str] = []
        else:
            secret = _private_file(self.dir / "password", target.password)
            # One password prompt, answered by the askpass helper; never a key of this machine's user.
            login = [
                "-o",
                "BatchMode=no",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "NumberOfPasswordPrompts=1",
            ]
            self._env = [
                "env",
                f"SSH_ASKPASS={ASKPASS}",
                "SSH_ASKPASS_REQUIRE=force",
                f"{PASSWORD_FILE_VARIABLE}={secret}",
            ]
        name = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
        key_type, blob = target.host_key.split()[:2]
        (self.dir / "known_hosts").write_text(f"{name} {key_type} {blob}\n")
        self.control = self.dir / "control"
        self.master: subprocess.Popen | None = None
        self._options = [
            "-F",
            "/dev/null",
            *login,
            "-p",
            str(target.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.dir / 'known_hosts'}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"HostKeyAlgorithms={_host_key_algorithms(key_type)}",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "Compression=no",
            "-c",
            CIPHERS,
        ]

    def close(self) -> None:
        if self.master is not None:
            self.master.terminate()
            self.master.wait()
            self.master.stderr.close()
            self.master = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "OpenSsh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def argv(self, command: str, *, forwards: list[tuple[str, str]] = ()) -> list[str]:
        """`ssh ... user@address command`; `forwards` are (local socket, remote socket) pairs. Once
        `log_in()` made a master connection, the command runs as a channel of it (no new handshake)."""
        extra = ["-S", str(self.control), "-o", "ControlMaster=no"] if self.master is not None else []
        for local, remote in forwards:
            extra += ["-L", f"{local}:{remote}"]
        return [*self._env, "ssh", *self._options, *extra, f"{self.target.user}@{self.target.address}", command]

    def log_in(self) -> None:
        """Open one master connection that the commands after it share: a login costs a key exchange,
        and a backup runs a dozen commands. The master is a child that dies with the thread that
        started it (no ControlPersist daemon outlives a killed worker). SshError in words on failure."""
        if self.master is not None:
            return
        master = spawn(
            [
                *self._env,
                "ssh",
                *self._options,
                "-M",
                "-N",
                "-S",
                str(self.control),
                "-o",
                "ControlPersist=no",
                f"{self.target.user}@{self.target.address}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # ssh makes its control socket once logged in, and exits when it cannot: wait for either.
        while not self.control.exists():
            try:
                master.wait(0.02)
            except subprocess.TimeoutExpired:
                continue
            error = master.stderr.read()
            master.stderr.close()
            raise SshError(self.problem(master.returncode, error, what="logging in"), returncode=master.returncode)
        self.master = master

    def run(self, command: str, *, what: str, timeout: float = 120, input: bytes | None = None) -> str:
        """Run a short command; its stdout, or SshError saying what failed (`what`: "reading the chain")."""
        try:
            result = subprocess.run(
                self.argv(command),
                input=input,
                capture_output=True,
                timeout=timeout,
                stdin=None if input else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise SshError(
                f"{what[0].upper()}{what[1:]} on {self.target.where} did not finish in {timeout:.0f} s."
            ) from None
        if result.returncode != 0:
            raise SshError(self.problem(result.returncode, result.stderr, what=what), returncode=result.returncode)
        return result.stdout.decode(errors="replace")

    def problem(self, returncode: int, stderr: bytes | str, *, what: str) -> str:
        """ssh's failure, or the remote command's, in words."""
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        where = self.target.where
        if returncode == SSH_FAILED or returncode < 0:
            if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
                seen = re.search(r"(SHA256:[A-Za-z0-9+/]+)", text)
                offered = f" It now presents {seen.group(1)}." if seen else ""
                return (
                    f"The SSH host key of {where} changed: it is not the key stored for the host.{offered} If the host "
                    "was reinstalled, clear its stored host key; otherwise something else answers at that address."
                )
            if "Permission denied" in text and not self.target.private_key:
                return (
                    f"SSH authentication as {where} failed: the password was refused. Set the host's SSH "
                    "password again (its credentials in the inventory), or give it a key."
                )
            if "Permission denied" in text:
                return (
                    f"SSH authentication as {where} failed: the key was refused. Install the site's public key "
                    "(manage.py ssh_public_key) in the user's authorized_keys on the host, or set the host's "
                    "credentials."
                )
            if "Connection refused" in text:
                return f"Cannot open SSH to {where}: the connection was refused (is sshd running on the host?)."
            if "timed out" in text:
                return f"Cannot open SSH to {where}: the connection timed out."
            if "Could not resolve hostname" in text:
                return f"Cannot resolve the address of {where}."
            if "No route to host" in text or "Network is unreachable" in text:
                return f"Cannot open SSH to {where}: no route to the host."
            if returncode < 0:
                return f"{what[0].upper()}{what[1:]} over SSH to {where} was stopped (signal {-returncode})."
        last = [line for line in text.strip().splitlines() if line.strip()]
        detail = last[-1] if last else f"exit status {returncode}"
        return f"{what[0].upper()}{what[1:]} on {where} failed: {detail}"
