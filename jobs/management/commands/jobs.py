from django.core.management.base import BaseCommand

from jobs.models import Job


class Command(BaseCommand):
    help = "List jobs, newest first."

    def add_arguments(self, parser):
        parser.add_argument("--running", action="store_true", help="only queued and running jobs")
        parser.add_argument("--limit", type=int, default=30)

    def handle(self, *args, running, limit, **options):
        jobs = Job.objects.active() if running else Job.objects.all()
        self.stdout.write(f"{'ID':>6}  {'KIND':<10} {'STATUS':<10} {'PROGRESS':>8}  {'CREATED':<16}  WHAT")
        for job in jobs.order_by("-created")[:limit]:
            progress = f"{job.progress_percent:.0f}%" if job.progress_percent is not None else ""
            line = (
                f"{job.pk:>6}  {job.kind:<10} {job.status:<10} {progress:>8}  {job.created:%Y-%m-%d %H:%M}  {job.name}"
            )
            if job.error:
                line += f"  ({job.error[:80]})"
            self.stdout.write(line)
