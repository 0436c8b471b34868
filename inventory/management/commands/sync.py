import sys
import time

from django.core.management.base import BaseCommand, CommandError

from inventory.models import Manager
from inventory.sync import request_sync
from jobs.models import Job


class Command(BaseCommand):
    help = "Sync a manager's inventory as a job; with --wait, wait for it and print the counts."

    def add_arguments(self, parser):
        parser.add_argument("manager", help="manager name")
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--timeout", type=int, default=3600)

    def handle(self, *args, manager, wait, timeout, **options):
        found = Manager.objects.filter(name=manager).first()
        if found is None:
            names = ", ".join(Manager.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No manager named {manager!r} (managers: {names}).")
        job = request_sync(found, origin=Job.Origin.CLI)
        self.stderr.write(f"Sync job {job.pk} ({job.status}).")
        if not wait:
            self.stdout.write(str(job.pk))
            return
        deadline = time.monotonic() + timeout
        while not job.is_final:
            if time.monotonic() > deadline:
                raise CommandError(f"Job {job.pk} did not finish in {timeout}s; is a worker running (make worker)?")
            time.sleep(0.5)
            job.refresh_from_db()
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"Sync failed: {job.error or job.status}")
        counts = job.result.get("counts", {})
        for name, count in counts.items():
            missing = job.result.get("missing", {}).get(name)
            sys.stdout.write(
                f"{name.replace('_', ' ')}: {count}" + (f" ({missing} now missing)" if missing else "") + "\n"
            )
        self.stdout.write(f"took {job.result.get('duration_seconds')}s")
