"""Which host a VM's volumes are reached on, and the login to it for a session (hosts.session).

A host logs in with its own key, root's login with the site key, or its own password (an oVirt
host added to the engine with root's password and no key): OpenSSH takes the key from a 0600 file,
or the password from an askpass helper (core.openssh). The first login learns the host key with
paramiko, as the credentials check does; OpenSSH then requires exactly that key.
"""

import paramiko

from core.cleanup import Cleanup
from core.openssh import SshError, SshTarget
from core.ssh import connection_problem, site_key
from hosts.session import LV, HostSession
from inventory.models import VM, Host
from inventory.ssh import open_client, uses_site_key
from jobs.errors import JobError
from ovirt.leftovers import UndoContext, register_undo, undo_engine_objects


def host_candidates(vm: VM) -> list[Host]:
    """The hosts a VM's volumes can be reached on: the one running it first, then the up hosts of its
    cluster (every host of a cluster sees the cluster's storage domains)."""
    hosts = []
    if vm.host_id is not None:
        hosts.append(vm.host)
    if vm.cluster_id is not None:
        hosts += [
            h
            for h in Host.objects.filter(cluster_id=vm.cluster_id, status=Host.Status.UP).order_by("name")
            if h.pk != vm.host_id
        ]
    return hosts


def ssh_target(host: Host) -> SshTarget:
    """What OpenSSH needs to log in to the host with its stored credentials (inventory.ssh's rule: its
    own key, else its password, else root's login with the site key)."""
    if uses_site_key(host):
        key, password = site_key().private_key, ""
    else:
        key, password = host.ssh_private_key, "" if host.ssh_private_key else host.ssh_password
    return SshTarget(
        address=host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=key,
        password=password,
        host_key=host.ssh_host_key,
        name=host.name,
    )


def log_in(host: Host, *, job=None) -> HostSession:
    """A session on `host`, logged in (one master connection the commands after it share); SshError
    in words when the host cannot be reached or refuses the credentials."""
    try:
        if not host.ssh_host_key:
            # The first login learns the host key (paramiko, as the credentials check does);
            # OpenSSH then requires exactly that key.
            open_client(host).close()
        session = HostSession(ssh_target(host), job=job, host_pk=host.pk)
    except SshError:
        raise
    except (ValueError, paramiko.SSHException, OSError) as e:
        raise SshError(connection_problem(e, f"{host.ssh_user}@{host.address}:{host.ssh_port}")) from None
    try:
        session.check_login()
    except SshError:
        session.close()
        raise
    return session


def open_session(vm: VM, *, job, cleanup: Cleanup, purpose: str) -> HostSession:
    """Log in to the first host of the VM's (the one running it, then the up hosts of its cluster)
    that lets us in; the cleanup stack closes the session. `purpose` ends "No host of VM X's cluster
    is up to ...". The failures of every host tried are told if none works."""
    failures = []
    for host in host_candidates(vm):
        try:
            session = log_in(host, job=job)
        except SshError as e:
            failures.append(str(e))
            continue
        cleanup.add(f"close SSH to host {host.name}", session.close)
        return session
    if not failures:
        raise JobError(f"No host of VM {vm.name}'s cluster is up to {purpose}.")
    raise JobError(" ".join(failures))


# ----- logical volumes a dead worker left active ------------------------------------------------


def _describe_lv(obj: dict) -> str:
    host = Host.objects.filter(pk=obj.get("host")).values_list("name", flat=True).first()
    return f"logical volume {obj['id']} active on {f'host {host}' if host else 'a host'}"


def _undo_lv(context: UndoContext, obj: dict) -> str:
    """Deactivate a recorded LV over SSH (no engine needed); SshError keeps the record."""
    host = Host.objects.filter(pk=obj.get("host")).first()
    if host is None:
        raise SshError(f"Logical volume {obj['id']} stays active: its host is no longer in the inventory.")
    with log_in(host) as session:
        session.deactivate(obj["id"])
    return f"Deactivated logical volume {obj['id']} on host {host.name}, which this job had activated"


register_undo(LV, _undo_lv, describe=_describe_lv)


def deactivate_left_lvs(job) -> None:
    """The LVs a dead worker activated on hosts (recorded on its job), deactivated over SSH now, by
    the node that reaps it: before the engine's undo (a snapshot merged while one of its volumes is
    held active on a host could fail) and whether or not the engine answers. What cannot be is said
    on the job and stays recorded, for the reaper's next pass."""
    undo_engine_objects(None, [o for o in job.engine_objects if o["kind"] == LV], job=job)
