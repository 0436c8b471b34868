from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from repository.models import BackupPoint
from repository.retention import Dependants, delete_backup, dependants
from repository.storage import DestinationRefused


class Command(BaseCommand):
    help = (
        "Delete a backup point: its files, and its row marked deleted. A point that others are built on is "
        "deleted only with --with-dependants, together with them; the snapshot its chain kept on the engine "
        "goes with the chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, help="backup point id")
        parser.add_argument("--with-dependants", action="store_true", help="also delete the points built on it")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, point, with_dependants, yes, **options):
        found = BackupPoint.objects.select_related("vm", "destination").filter(pk=point).first()
        if found is None:
            raise CommandError(f"No backup point {point}.")
        going = [found, *(dependants(found) if with_dependants else [])]
        if not yes:
            names = ", ".join(f"{p.pk} ({p.vm.name} {p.type} {p.started:%Y-%m-%d %H:%M})" for p in going)
            answer = input(f"Delete backup {names}? Type yes: ")
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing deleted.")
        said = []

        def waiting():
            if not said:  # once: the lock is asked for again every 10 s
                self.stdout.write(
                    f"Waiting for the lock of VM {found.vm.name}'s backups on {found.destination.name} "
                    "(a prune or another deletion holds it)..."
                )
                said.append(True)

        try:
            deleted = delete_backup(point=found, with_dependants=with_dependants, waiting=waiting)
        except Dependants as e:
            raise CommandError(f"{e} Use --with-dependants.") from None
        except (ValueError, DestinationRefused) as e:  # also PointBusy: a restore, verify or backup reads it now
            raise CommandError(str(e)) from None
        record_command(action="point_deleted", target=found, deleted=deleted)
        self.stdout.write(f"Deleted backup {', '.join(map(str, deleted))}")
