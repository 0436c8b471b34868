from django.core.management.base import BaseCommand, CommandError

from jobs.cli import finish, wait_for_job
from repository.models import BackupPoint
from repository.restore import request_restore


class Command(BaseCommand):
    help = "Restore a backup point as a new VM. Prints the job id; with --wait, the new VM's engine id last."

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, help="backup point id")
        parser.add_argument("--name", required=True, help="name of the new VM (must not exist)")
        parser.add_argument("--cluster", default="")
        parser.add_argument("--storage-domain", default="")
        parser.add_argument("--power-on", action="store_true")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, point, name, cluster, storage_domain, power_on, wait, **options):
        found = BackupPoint.objects.filter(pk=point).first()
        if found is None:
            raise CommandError(f"No backup point {point}.")
        try:
            job = request_restore(
                point=found, name=name, cluster=cluster, storage_domain=storage_domain, power_on=power_on
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(str(job.pk))
        if wait:
            job = wait_for_job(job)
            finish(job)
            self.stdout.write(job.result["vm_id"])
