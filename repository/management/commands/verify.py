from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from repository.models import BackupPoint
from repository.verify import request_verifies


class Command(BaseCommand):
    help = (
        "Check backup points against their manifests (checksums, QCOW2 images, chains). Prints the job id (one "
        "per place the backups are: the shared destinations, each node with local ones); with --wait, follows "
        "them and exits non-zero when a point is damaged, naming the file and its checksums."
    )

    def add_arguments(self, parser):
        parser.add_argument("points", nargs="*", type=int, help="backup point ids")
        parser.add_argument("--all", action="store_true", help="every complete or damaged point")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, points, all, wait, **options):
        if bool(points) == all:
            raise CommandError("Name the backup points to verify, or --all.")
        found = None
        if points:
            found = list(BackupPoint.objects.filter(pk__in=points))
            missing = sorted(set(points) - {p.pk for p in found})
            if missing:
                raise CommandError(f"No backup point {', '.join(map(str, missing))}.")
        jobs = request_verifies(origin=Job.Origin.CLI, points=found)
        for job in jobs:
            record_command(action="verify_requested", job=job.pk, points=points or "all")
            self.stdout.write(str(job.pk))
        if wait:
            ended = [wait_for_job(job) for job in jobs]
            for job in ended:
                finish(job)
