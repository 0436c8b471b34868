from django.core.management.base import BaseCommand

from core.secrets import create_missing_keys


class Command(BaseCommand):
    help = "First start: create the secret key and the credentials key in DATA_DIR unless they exist (mode 0600)."
    requires_system_checks = []

    def handle(self, *args, **options):
        for path in create_missing_keys():
            self.stdout.write(f"Created {path}; keep a copy of it with your backups of the database.")
