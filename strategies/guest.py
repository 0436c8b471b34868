"""Commands run in the guest over SSH around the snapshot (a policy's pre/post snapshot commands),
for what the guest agent's freeze does not cover: a database flushed and locked, a service paused."""

import paramiko

from core.ssh import connect_ssh, connection_problem, fingerprint, server_host_key
from inventory.models import VM
from jobs.errors import JobError

OUTPUT_TAIL = 400  # characters of a command's output kept in the job's log


def connect_guest(*, vm: VM, policy, job, what: str, timeout: float = 30) -> tuple[paramiko.SSHClient, str]:
    """Log in to the guest as the policy's SSH user (its host key pinned at the first login);
    returns the client and "user@address:port". JobError says why `what` cannot be done otherwise."""
    address = vm.ssh_address
    if not address:
        raise JobError(
            f"{what} cannot run: VM {vm.name} has no address for SSH (the engine reports no FQDN "
            "while its guest agent is silent). Set the VM's guest address."
        )
    if not policy.guest_ssh_private_key:
        raise JobError(f"{what} cannot run: policy {policy.name} has no guest SSH key.")
    where = f"{policy.guest_ssh_user}@{address}:{policy.guest_ssh_port}"
    try:
        client = connect_ssh(
            address,
            port=policy.guest_ssh_port,
            user=policy.guest_ssh_user,
            private_key=policy.guest_ssh_private_key,
            host_key=vm.guest_host_key,
            timeout=timeout,
        )
    except (ValueError, paramiko.SSHException, OSError) as e:
        raise JobError(f"{what} cannot run: {connection_problem(e, where)}") from None
    if not vm.guest_host_key:
        vm.guest_host_key = server_host_key(client)
        VM.objects.filter(pk=vm.pk).update(guest_host_key=vm.guest_host_key)
        job.log("info", f"Trusting the guest's SSH host key {fingerprint(vm.guest_host_key)} from now on")
    return client, where


def run_guest_command(*, vm: VM, policy, command: str, phase: str, job) -> None:
    """Run `command` in the guest as the policy's SSH user; raise JobError unless it exits 0."""
    client, where = connect_guest(
        vm=vm, policy=policy, job=job, what=f"The {phase} command", timeout=min(30, policy.guest_command_timeout)
    )
    try:
        job.log("info", f"Running the {phase} command in the guest as {where}")
        channel = client.get_transport().open_session()
        channel.set_combine_stderr(True)  # one stream: a chatty stderr cannot stall a full stdout
        channel.settimeout(policy.guest_command_timeout)
        channel.exec_command(command)
        channel.shutdown_write()
        try:
            output = channel.makefile("rb").read().decode(errors="replace")
        except TimeoutError:
            raise JobError(
                f"The {phase} command did not finish in {policy.guest_command_timeout}s; it was abandoned."
            ) from None
        status = channel.recv_exit_status()
    finally:
        client.close()
    said = output.strip()[-OUTPUT_TAIL:]
    if status != 0:
        raise JobError(f"The {phase} command exited with status {status}" + (f": {said}" if said else "."))
    job.log("info", f"The {phase} command succeeded" + (f": {said}" if said else "."))
