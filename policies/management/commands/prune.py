from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from policies.models import Policy
from repository.retention import plan_policy, request_prune


class Command(BaseCommand):
    help = (
        "Apply the retention of every enabled policy (or of one): delete the points it no longer keeps, and merge "
        "an expired full into the kept incremental that depends on it. --dry-run prints each point: keep, delete "
        "or merge, and why; nothing is changed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--policy", help="the policy's name")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--wait", action="store_true", help="follow the retention jobs until they end")

    def handle(self, *args, policy, dry_run, wait, **options):
        if policy:
            policies = list(Policy.objects.filter(name=policy))
            if not policies:
                raise CommandError(f"No policy named {policy!r}.")
        else:
            policies = list(Policy.objects.filter(enabled=True))
        for each in policies:
            if dry_run:
                self.stdout.write(f"Policy {each.name}:")
                for plan in plan_policy(policy=each).values():
                    for decision in plan.decisions:
                        self.stdout.write(f"  {decision.action:<6} {decision}")
                continue
            try:
                job = request_prune(policy=each, origin=Job.Origin.CLI)
            except ValueError as e:
                raise CommandError(f"Policy {each.name}: {e}") from None
            record_command(action="prune_requested", target=each, job=job.pk)
            self.stdout.write(str(job.pk))
            if wait:
                finish(wait_for_job(job))
