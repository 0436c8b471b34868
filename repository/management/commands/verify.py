from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from repository.models import BackupPoint
from repository.verify import request_verify


class Command(BaseCommand):
    help = (
        "Check backup points against their manifests (checksums, QCOW2 images, chains). Prints the job id; with "
        "--wait, follows it and exits non-zero when a point is damaged, naming the file and its checksums."
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
        job = request_verify(origin=Job.Origin.CLI, points=found)
        record_command(action="verify_requested", job=job.pk, points=points or "all")
        self.stdout.write(str(job.pk))
        if wait:
            finish(wait_for_job(job))
