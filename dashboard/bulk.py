"""What the inventory list does to the VMs ticked on it: back them up now, or list them in a policy."""

from dataclasses import dataclass, field

from django.db import transaction

from core.formats import plural
from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from strategies.backup import request_backup


@dataclass
class BulkBackup:
    jobs: list[Job] = field(default_factory=list)
    refused: list[tuple[VM, str]] = field(default_factory=list)  # the VM and why, in words


def back_up_vms(*, vms: list[VM], owner, origin: str) -> BulkBackup:
    """Queue a backup of each VM as "Back up now" does (its policy's destination, strategy and
    options); a VM that cannot be backed up now is left out with the reason."""
    done = BulkBackup()
    for vm in vms:
        try:
            done.jobs.append(request_backup(vm=vm, origin=origin, owner=owner))
        except ValueError as e:
            done.refused.append((vm, str(e)))
    return done


def add_to_policy(*, policy: Policy, vms: list[VM]) -> list[VM]:
    """List the VMs in the policy explicitly; returns those that were not listed yet."""
    with transaction.atomic():
        listed = set(policy.vms.filter(pk__in=[vm.pk for vm in vms]).values_list("pk", flat=True))
        added = [vm for vm in vms if vm.pk not in listed]
        policy.vms.add(*added)
    return added


def backup_message(done: BulkBackup) -> str:
    """ "Queued 3 backups." """
    return f"Queued {plural(len(done.jobs), 'backup')}."


def refusal_message(done: BulkBackup) -> str:
    """ "Not queued: db01 (A backup of db01 is already queued (job 5).)." """
    return "Not queued: " + "; ".join(f"{vm.name} ({why})" for vm, why in done.refused) + "."
