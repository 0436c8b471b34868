"""SSH to hypervisor hosts (paramiko): the credentials check now, data transfer later."""

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


def open_client(host: Host, *, timeout: float = 15) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # Host keys of hypervisors are not known to us in advance; the engine enrolled them.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    key = load_private_key(host.ssh_private_key) if host.ssh_private_key else None
    client.connect(
        host.address,
        port=host.ssh_port,
        username=host.ssh_user,
        pkey=key,
        password=host.ssh_password or None,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def test_ssh(host: Host) -> SshResult:
    """Log in and run a harmless command; say in plain words what failed."""
    where = f"{host.ssh_user}@{host.address}:{host.ssh_port}"
    if not host.ssh_private_key and not host.ssh_password:
        return SshResult(False, f"No SSH key or password is set for {host.name}.")
    try:
        client = open_client(host)
    except ValueError as e:
        return SshResult(False, str(e))
    except socket.gaierror as e:
        return SshResult(False, f"Cannot resolve {host.address}: {e.strerror}.")
    except paramiko.AuthenticationException:
        return SshResult(False, f"SSH authentication as {where} failed: the key or password was refused.")
    except (paramiko.SSHException, OSError) as e:
        return SshResult(False, f"Cannot open SSH to {where}: {getattr(e, 'strerror', None) or e}.")
    try:
        _, stdout, stderr = client.exec_command("uname -n", timeout=15)
        name = stdout.read().decode(errors="replace").strip()
        status = stdout.channel.recv_exit_status()
        if status != 0:
            return SshResult(False, f"Logged in to {where}, but a command failed: {stderr.read().decode().strip()}")
        return SshResult(True, f"Logged in to {where} (host name {name}).")
    finally:
        client.close()
