from django.core.management.base import BaseCommand, CommandError

from policies.coverage import covered_by
from policies.models import Policy


class Command(BaseCommand):
    help = "The VMs a policy covers now, and why; a VM a higher-priority policy wins says which."

    def add_arguments(self, parser):
        parser.add_argument("name", help="policy name")

    def handle(self, *args, name, **options):
        policy = Policy.objects.filter(name=name).first()
        if policy is None:
            raise CommandError(f"No policy named {name!r}.")
        vms = list(covered_by(policy).order_by("name"))
        winners = dict(Policy.objects.filter(pk__in={vm.covering_policy_id for vm in vms}).values_list("pk", "name"))
        for vm in vms:
            line = f"{vm.name}\t{vm.reason}"
            if vm.covering_policy_id != policy.pk:
                winner = winners.get(vm.covering_policy_id)
                line += f"\tbacked up by {winner} (higher priority)" if winner else "\tnot backed up: policy disabled"
            self.stdout.write(line)
        if not vms:
            self.stderr.write(f"Policy {policy.name} covers no VM now.")
