from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from inventory.models import Manager
from inventory.sync import request_sync
from jobs.models import Job
from ovirt.connection import describe_certificate, normalize_api_url, test_connection
from ovirt.errors import EngineError


class Command(BaseCommand):
    help = "Register an engine (manager), test the connection, and queue its first inventory sync. Prints its id."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--url", required=True, help="host name or https://ENGINE/ovirt-engine/api")
        parser.add_argument("--username", required=True, help="user@domain, e.g. admin@internal")
        parser.add_argument("--password-file", required=True, type=Path)
        parser.add_argument("--ca-file", type=Path, help="the engine's CA certificate (PEM)")
        parser.add_argument("--insecure", action="store_true", help="do not verify TLS (not recommended)")
        parser.add_argument("--if-missing", action="store_true", help="do nothing if the name is registered")
        parser.add_argument("--no-sync", action="store_true", help="do not queue the first sync")

    def handle(self, *args, name, url, username, password_file, ca_file, insecure, if_missing, no_sync, **options):
        password_file, ca_file = Path(password_file), Path(ca_file) if ca_file else None
        existing = Manager.objects.filter(name=name).first()
        if existing and if_missing:
            self.stdout.write(str(existing.pk))
            return
        if existing:
            raise CommandError(f"A manager named {name!r} exists already (id {existing.pk}).")
        try:
            api_url, note = normalize_api_url(url)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if note:
            self.stderr.write(note)
        try:
            password = password_file.read_text().rstrip("\n")
        except OSError as e:
            raise CommandError(f"Cannot read the password file {password_file}: {e.strerror}") from None
        ca = ""
        if ca_file:
            try:
                ca = describe_certificate(ca_file.read_text()).pem.strip() + "\n"
            except OSError as e:
                raise CommandError(f"Cannot read the CA file {ca_file}: {e.strerror}") from None
            except EngineError as e:
                raise CommandError(f"{ca_file}: {e}") from None
        elif not insecure:
            raise CommandError("Give --ca-file with the engine's CA certificate, or --insecure.")
        manager = Manager(
            name=name, api_url=api_url, username=username, password=password, ca_certificate=ca, verify_tls=not insecure
        )
        try:
            manager.full_clean()
        except ValidationError as e:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in e.message_dict.items())) from None
        report = test_connection(manager)
        if not report.ok:
            raise CommandError(report.error)
        manager.record_connection_test(report)
        manager.save()
        record_command(action="manager_created", target=manager)
        if not no_sync:
            job = request_sync(manager, origin=Job.Origin.CLI)
            self.stderr.write(f"Inventory sync queued as job {job.pk}.")
        self.stdout.write(str(manager.pk))
