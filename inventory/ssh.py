"""SSH (paramiko) to hypervisor hosts and to guests: connections and the credentials check."""

import io
import socket
from dataclasses import dataclass

import paramiko

from inventory.models import Host


@dataclass
class SshResult:
    ok: bool
    message: str


def load_private_key(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("The SSH private key is not an unencrypted OpenSSH/PEM Ed25519, ECDSA or RSA key.")


def normalize_private_key(text: str) -> str:
    """A pasted key as stored ("" for none); ValueError when it is not a key we can use."""
    text = text.strip()
    if not text:
        return ""
    load_private_key(text + "\n")
    return text + "\n"


def connect_ssh(
    address: str, *, port: int, user: str, private_key: str = "", password: str = "", timeout: float = 15
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # Host keys of hypervisors (enrolled by the engine) and guests are not known to us in advance.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    key = load_private_key(private_key) if private_key else None
    client.connect(
        address,
        port=port,
        username=user,
        pkey=key,
        password=password or None,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def open_client(host: Host, *, timeout: float = 15) -> paramiko.SSHClient:
    return connect_ssh(
        host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=host.ssh_private_key,
        password=host.ssh_password,
        timeout=timeout,
    )


def connection_problem(error: Exception, where: str) -> str:
    """What failed opening SSH to `where`, in plain words."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, socket.gaierror):
        return f"Cannot resolve the address of {where}: {error.strerror}."
    if isinstance(error, paramiko.AuthenticationException):
        return f"SSH authentication as {where} failed: the key or password was refused."
    return f"Cannot open SSH to {where}: {getattr(error, 'strerror', None) or error}."


def test_ssh(host: Host) -> SshResult:
    """Log in and run a harmless command; say in plain words what failed."""
    where = f"{host.ssh_user}@{host.address}:{host.ssh_port}"
    if not host.ssh_private_key and not host.ssh_password:
        return SshResult(False, f"No SSH key or password is set for {host.name}.")
    try:
        client = open_client(host)
    except (ValueError, paramiko.SSHException, OSError) as e:
        return SshResult(False, connection_problem(e, where))
    try:
        _, stdout, stderr = client.exec_command("uname -n", timeout=15)
        name = stdout.read().decode(errors="replace").strip()
        status = stdout.channel.recv_exit_status()
        if status != 0:
            return SshResult(False, f"Logged in to {where}, but a command failed: {stderr.read().decode().strip()}")
        return SshResult(True, f"Logged in to {where} (host name {name}).")
    finally:
        client.close()
