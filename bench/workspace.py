"""What every benchmark starts from: a throwaway DATA_DIR with a migrated SQLite database."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def open_workspace(prefix: str) -> Path:
    """A temporary directory (removed at exit: benches write gigabytes of images) that Django
    runs in, on SQLite, whatever DATABASE_URL says."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    sys.path.insert(0, str(ROOT))
    os.environ.update(DATA_DIR=str(work / "data"), DJANGO_SETTINGS_MODULE="backupsite.settings")
    os.environ.pop("DATABASE_URL", None)
    import django
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    # A throwaway site's keys, in the environment: the settings read them, nothing is written.
    os.environ.setdefault("SECRET_KEY", Fernet.generate_key().decode() * 2)
    os.environ.setdefault("CREDENTIALS_KEY", Fernet.generate_key().decode())
    django.setup()
    call_command("migrate", verbosity=0)
    return work
