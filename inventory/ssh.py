"""SSH to a hypervisor host with the credentials an admin stored on it, and the credentials check."""

import paramiko

from core.ssh import SshResult, connect_ssh, connection_problem, server_host_key
from inventory.models import Host


def open_client(host: Host, *, timeout: float = 15) -> paramiko.SSHClient:
    client = connect_ssh(
        host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=host.ssh_private_key,
        password=host.ssh_password,
        host_key=host.ssh_host_key,
        timeout=timeout,
    )
    if not host.ssh_host_key:
        host.ssh_host_key = server_host_key(client)
        type(host).objects.filter(pk=host.pk).update(ssh_host_key=host.ssh_host_key)
    return client


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
