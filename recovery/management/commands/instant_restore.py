"""Boot a backup point as a VM straight from the backup; migrate it to production storage; discard it.

    manage.py instant_restore POINT_ID --name NAME [--cluster C] [--migrate-to SD] [--wait]
    manage.py instant_restore --migrate VM --to SD [--wait]
    manage.py instant_restore --discard VM [--wait]
    manage.py instant_restore --list

Prints the job id; with --wait, follows it (and the migration, when --migrate-to asks for one) and
prints the VM's engine id last. VM is the instant VM's name or the instant restore's id."""

from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from recovery.instant.errors import InstantError
from recovery.instant.workflow import request_discard, request_instant_restore, request_migrate
from recovery.models import InstantRestore
from repository.models import BackupPoint


def instant_named(ref: str) -> InstantRestore:
    """The instant restore an operator names: its id, or the name of its VM (the newest active one)."""
    found = InstantRestore.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
    found = found or InstantRestore.objects.active().filter(name=ref).first()
    found = found or InstantRestore.objects.filter(name=ref).first()
    if found is None:
        raise CommandError(f"No instant restore {ref!r} (give its id or its VM's name; --list shows them).")
    return found


class Command(BaseCommand):
    help = "Boot a backup point as a VM from the backup itself, then migrate it to a storage domain or discard it."

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, nargs="?", help="backup point id to boot")
        parser.add_argument("--name", default="", help="name of the VM booted from the backup")
        parser.add_argument("--cluster", default="", help="cluster to run it in (the backed-up VM's by default)")
        parser.add_argument("--migrate-to", default="", help="once up, move its disks to this storage domain")
        parser.add_argument("--migrate", metavar="VM", default="", help="move a running instant VM's disks (--to)")
        parser.add_argument("--to", default="", help="with --migrate: the storage domain")
        parser.add_argument("--discard", metavar="VM", default="", help="stop and remove an instant VM")
        parser.add_argument("--list", action="store_true", help="list instant restores")
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, point, name, cluster, migrate_to, migrate, to, discard, list, wait, **options):
        actions = [bool(point is not None), bool(migrate), bool(discard), list]
        if sum(actions) != 1:
            raise CommandError("Give one of: a point id with --name, --migrate VM --to SD, --discard VM, --list.")
        if list:
            return self._list()
        try:
            if migrate:
                instant = instant_named(migrate)
                job = request_migrate(instant=instant, to=to, origin=Job.Origin.CLI)
                action = "instant_migrate_requested"
            elif discard:
                instant = instant_named(discard)
                job = request_discard(instant=instant, origin=Job.Origin.CLI)
                action = "instant_discard_requested"
            else:
                found = BackupPoint.objects.filter(pk=point).select_related("vm", "destination").first()
                if found is None:
                    raise CommandError(f"No backup point {point}.")
                instant, job = request_instant_restore(
                    point=found,
                    name=name,
                    cluster=cluster,
                    migrate_to=migrate_to,
                    origin=Job.Origin.CLI,
                    who="the command line",
                )
                action = "instant_restore_requested"
        except InstantError as e:
            raise CommandError(str(e)) from None
        record_command(action=action, target=instant.point or instant, job=job.pk, instant=instant.pk)
        self.stdout.write(str(job.pk))
        if not wait:
            return
        job = wait_for_job(job)  # with --migrate-to, the boot job goes on to migrate
        finish(job)
        instant.refresh_from_db()
        if not discard and instant.vm_engine_id:
            self.stdout.write(instant.vm_engine_id)

    def _list(self) -> None:
        rows = InstantRestore.objects.select_related("vm")[:100]
        if not rows:
            self.stdout.write("No instant restores.")
            return
        for r in rows:
            up = f"up in {r.seconds_to_up:.1f} s" if r.seconds_to_up is not None else ""
            self.stdout.write(
                f"{r.pk:>5}  {r.name:<24} {r.get_status_display():<20} backup {r.point_id or '-':<6} node {r.node} "
                f"{up} {r.error}".rstrip()
            )
