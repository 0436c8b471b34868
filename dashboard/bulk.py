"""What the inventory list does to the VMs ticked on it: back them up now, or list them in a policy."""

from dataclasses import dataclass, field

from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.formats import plural
from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from repository.models import BackupDestination
from strategies.backup import NoDestination, request_backup


@dataclass
class BulkBackup:
    destination: BackupDestination | None = None  # the one chosen for them all, else each VM's policy's
    jobs: list[Job] = field(default_factory=list)
    refused: list[tuple[VM, str]] = field(default_factory=list)  # the VM and why, in words


def back_up_vms(*, vms: list[VM], owner, origin: str, destination: BackupDestination | None = None) -> BulkBackup:
    """Queue a backup of each VM as "Back up now" does: its policy's destination, strategy and
    options, unless a destination is chosen (then every VM's backup goes there, as on a VM's own
    page; a VM no policy covers needs one). A VM that cannot be backed up now is left out with the
    reason."""
    done = BulkBackup(destination=destination)
    for vm in vms:
        try:
            done.jobs.append(request_backup(vm=vm, origin=origin, owner=owner, destination=destination))
        except NoDestination:
            # The inventory's own words: the destination is chosen right beside the button.
            done.refused.append((vm, "no enabled policy covers it: choose a Destination for it and back it up again"))
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


def backup_message(done: BulkBackup) -> SafeString:
    """ "Queued 2 backups: web01 (job 12), web02 (job 13)." each job a link to its page, where it is
    followed (the list it was sent from shows no job)."""
    where = format_html(" to {}", done.destination.name) if done.destination else ""
    links = ((job.name, reverse("job-detail", args=[job.pk]), job.pk) for job in done.jobs)
    jobs = format_html_join(", ", '{} (<a href="{}">job {}</a>)', links)
    return format_html("Queued {}{}: {}.", plural(len(done.jobs), "backup"), where, jobs)


def refusal_message(done: BulkBackup) -> str:
    """ "Not queued: db01 (A backup of db01 is already queued (job 5).)." """
    return "Not queued: " + "; ".join(f"{vm.name} ({why})" for vm, why in done.refused) + "."
