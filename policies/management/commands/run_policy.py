from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import wait_for_job
from jobs.models import Job
from policies.models import Policy
from policies.schedule import run_policy_now


class Command(BaseCommand):
    help = (
        "Run a policy now: one backup job per VM it covers, highest priority first. Prints the run's job ids; "
        "with --wait, follows them and exits non-zero when one did not succeed."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="policy name")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, name, wait, **options):
        policy = Policy.objects.filter(name=name).first()
        if policy is None:
            raise CommandError(f"No policy named {name!r}.")
        try:
            run = run_policy_now(policy=policy, origin=Job.Origin.CLI)
        except ValueError as e:
            raise CommandError(str(e)) from None
        record_command(action="policy_run_requested", target=policy, run=run.number)
        jobs = list(run.jobs.order_by("created", "pk"))
        self.stdout.write(f"Run {run.number} of policy {policy.name}: {len(jobs)} backup job(s).")
        if run.note:
            self.stdout.write(run.note)
        for job in jobs:
            self.stdout.write(f"{job.pk}\t{job.name}")
        if wait:
            ended = [wait_for_job(job) for job in jobs]
            failed = [job for job in ended if job.status != Job.Status.SUCCEEDED]
            for job in ended:
                self.stdout.write(f"{job.pk}\t{job.name}\t{job.status}\t{job.error}".rstrip())
            if failed:
                raise CommandError(f"{len(failed)} of {len(ended)} backup(s) did not succeed.")
