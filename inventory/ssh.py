"""SSH to a hypervisor host: the credentials an admin stored on it, else root's login with the site key;
and the credentials check."""

import paramiko

from core.ssh import SshResult, connect_ssh, connection_problem, server_host_key, site_key
from inventory.models import Host


def uses_site_key(host: Host) -> bool:
    """A host without its own key or password logs in with the site's key."""
    return not (host.ssh_private_key or host.ssh_password)


def credentials_label(host: Host) -> str:
    if uses_site_key(host):
        return "the site key"
    if host.ssh_private_key:
        return "its own key"
    return "a password"


def ssh_target(host: Host) -> str:
    """user@address:port, as the login goes; "" while the engine reports no address for the host."""
    return f"{host.ssh_user}@{host.address}:{host.ssh_port}" if host.address else ""


def open_client(host: Host, *, timeout: float = 15) -> paramiko.SSHClient:
    private_key = site_key().private_key if uses_site_key(host) else host.ssh_private_key
    client = connect_ssh(
        host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=private_key,
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
    where = ssh_target(host) or f"{host.ssh_user}@(no address):{host.ssh_port}"
    try:
        client = open_client(host)
    except paramiko.AuthenticationException as e:
        message = connection_problem(e, where)
        if uses_site_key(host):
            message += (
                f" Add the site's public key (Settings, or `manage.py ssh_public_key`) to the authorized_keys "
                f"of {host.ssh_user} on {host.name}, or set other credentials for this host."
            )
        return SshResult(False, message)
    except (ValueError, paramiko.SSHException, OSError) as e:
        return SshResult(False, connection_problem(e, where))
    try:
        _, stdout, stderr = client.exec_command("uname -n", timeout=15)
        name = stdout.read().decode(errors="replace").strip()
        status = stdout.channel.recv_exit_status()
        if status != 0:
            return SshResult(False, f"Logged in to {where}, but a command failed: {stderr.read().decode().strip()}")
        return SshResult(True, f"Logged in to {where} with {credentials_label(host)} (host name {name}).")
    finally:
        client.close()
