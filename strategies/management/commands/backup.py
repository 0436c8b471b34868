from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from inventory.models import VM
from inventory.validators import is_uuid
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from repository.models import BackupDestination
from strategies.backup import request_backup
from strategies.registry import not_available, options_help, strategy_options, usable_strategy_choices


class Command(BaseCommand):
    help = "Back up a VM. Prints the job id; with --wait, follows it and prints the backup point id last."

    def add_arguments(self, parser):
        parser.add_argument("vm", help="VM name or engine id")
        parser.add_argument(
            "--strategy",
            default=None,
            help="default: the VM's policy's; available: "
            + ", ".join(name for name, _ in usable_strategy_choices())
            + ". "
            + not_available(strategy_options(), by_name=True),
        )
        parser.add_argument("--type", default="auto", choices=["auto", "full", "incremental"])
        parser.add_argument("--destination", default=None, help="destination name")
        parser.add_argument("--exclude", action="append", default=[], help="disk alias or id (repeatable)")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="NAME[=VALUE]",
            dest="strategy_options",
            help="one of the strategy's own options (repeatable; NAME alone sets a true-or-false option): "
            + options_help(),
        )
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, vm, strategy, type, destination, exclude, wait, strategy_options=(), **options):
        vms = VM.objects.filter(missing_since=None)
        found = list(vms.filter(engine_id=vm)) if is_uuid(vm) else list(vms.filter(name=vm))
        if not found:
            raise CommandError(f"No VM named {vm!r} in the inventory (sync its manager first).")
        if len(found) > 1:
            raise CommandError(f"{len(found)} VMs are named {vm!r} (on different managers); give the engine id.")
        dest = None
        if destination:
            dest = BackupDestination.objects.filter(name=destination).first()
            if dest is None:
                raise CommandError(f"No destination named {destination!r}.")
        given = {}
        for text in strategy_options:
            name, has_value, value = text.partition("=")
            if not name.strip():
                raise CommandError(f"--option {text!r}: give NAME or NAME=VALUE.")
            given[name.strip()] = value if has_value else True
        try:
            job = request_backup(
                vm=found[0],
                origin=Job.Origin.CLI,
                strategy=strategy,
                type=type,
                destination=dest,
                exclude=exclude,
                options=given or None,
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
        record_command(action="backup_requested", target=found[0], job=job.pk, type=type)
        self.stdout.write(str(job.pk))
        if wait:
            job = wait_for_job(job)
            finish(job)
            self.stdout.write(str(job.result["point"]))
