from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from recovery.instant.errors import InstantError
from recovery.instant.workflow import proof_name, request_instant_restore
from recovery.models import InstantRestore
from repository.models import BackupPoint


class Command(BaseCommand):
    help = (
        "Prove a backup point boots: boot it by instant restore without network, wait for up (and for the guest "
        "agent where the VM had one), then discard it. Prints the job id; with --wait, the time to boot and the "
        "guest's answer."
    )

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, help="backup point id")
        parser.add_argument("--cluster", default="", help="cluster to boot it in (the backed-up VM's by default)")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, point, cluster, wait, **options):
        found = BackupPoint.objects.filter(pk=point).select_related("vm", "destination").first()
        if found is None:
            raise CommandError(f"No backup point {point}.")
        try:
            instant, job = request_instant_restore(
                point=found,
                name=proof_name(found),
                cluster=cluster,
                origin=Job.Origin.CLI,
                who="the command line",
                purpose=InstantRestore.Purpose.PROOF,
            )
        except InstantError as e:
            raise CommandError(str(e)) from None
        record_command(action="restore_proof_requested", target=found, job=job.pk, instant=instant.pk)
        self.stdout.write(str(job.pk))
        if wait:
            job = wait_for_job(job)
            finish(job)
            instant.refresh_from_db()
            self.stdout.write(f"Booted in {instant.seconds_to_up:.1f} s: {instant.proof_answer}")
