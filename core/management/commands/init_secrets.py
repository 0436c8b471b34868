import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from core.secrets import KEYS, create_missing_keys, key_path


class Command(BaseCommand):
    help = (
        "First start: create the secret key and the credentials key in DATA_DIR unless they exist (mode 0600). "
        "Refuses when the database already belongs to a site: a node joining it needs that site's keys."
    )
    requires_system_checks = []

    def handle(self, *args, **options):
        wanted = [name for name in KEYS if not os.environ.get(name) and not key_path(name).exists()]
        if wanted:
            refuse_if_the_site_has_keys(wanted)
        for path in create_missing_keys():
            self.stdout.write(f"Created {path}; keep a copy of it with your backups of the database.")


def refuse_if_the_site_has_keys(wanted: list[str]) -> None:
    """A fresh key on a machine whose database already has the check values of a site's keys would
    be refused at start anyway, and could read none of the site's credentials: say so now, naming
    what to copy. (A fresh SQLite file has no tables: a first start goes on.)"""
    from django.conf import settings

    from core.models import KeyCheck
    from core.site import tables_exist

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and not Path(database["NAME"]).exists():
        return  # a first start (and connecting would create the file with the wrong mode)
    try:
        if not tables_exist():
            return
        existing = list(KeyCheck.objects.filter(key__in=wanted))
    except DatabaseError as e:
        raise CommandError(
            f"Cannot reach the database to see whether it already belongs to a site ({e}); no key was created. "
            "Check DATABASE_URL, or set " + " and ".join(wanted) + " in the environment."
        ) from None
    if existing:
        first = min(existing, key=lambda check: check.made)
        copies = "; ".join(f"its DATA_DIR/{key_path(name).name} to {key_path(name)}" for name in wanted)
        raise CommandError(
            f"This database already belongs to a site (its keys were recorded "
            f"{timezone.localtime(first.made):%Y-%m-%d %H:%M %Z} by node {first.made_by}), and this node has no "
            f"{' and no '.join(wanted)}. A new key could not read the site's credentials, so none was created. "
            f"Copy the site's keys from its first node: {copies} (or set {' and '.join(wanted)} in this node's "
            "environment); then start again."
        )
