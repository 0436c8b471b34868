"""The two keys a site must keep: Django's SECRET_KEY (sessions, CSRF) and CREDENTIALS_KEY
(engine passwords and SSH keys at rest). Taken from the environment, else from DATA_DIR, where
the first-start step creates them; nothing creates them on import."""

import os
from pathlib import Path

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.env import create_secret, random_secret_key

KEYS = {
    "SECRET_KEY": ("secret_key", random_secret_key),
    "CREDENTIALS_KEY": ("credentials.key", lambda: Fernet.generate_key().decode()),
}


def key_path(name: str) -> Path:
    return Path(settings.DATA_DIR) / KEYS[name][0]


def create_missing_keys() -> list[Path]:
    """Create DATA_DIR (0700), the SQLite database file (0600, empty: SQLite makes it a database on
    first use, and its journal files take its mode), and each key file that neither the environment
    nor DATA_DIR provides; the paths created."""
    Path(settings.DATA_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and not Path(database["NAME"]).exists():
        Path(database["NAME"]).touch(mode=0o600)
    return [
        key_path(name)
        for name, (_, make) in KEYS.items()
        if not os.environ.get(name) and create_secret(key_path(name), make)
    ]


def missing_key_message(name: str) -> str:
    return (
        f"{name} is not set and {key_path(name)} does not exist. On a first start run "
        f"`python manage.py init_secrets` (`make run` does), or set {name} in the environment. If this "
        "site ran before, DATA_DIR points at the wrong directory"
        + (": without the old key its stored credentials cannot be read." if name == "CREDENTIALS_KEY" else ".")
    )


def missing_keys() -> list[str]:
    missing = []
    for name in KEYS:
        try:
            value = getattr(settings, name)
        except ImproperlyConfigured:  # Django refuses to hand out an empty SECRET_KEY
            value = ""
        if not value:
            missing.append(name)
    return missing


def require_keys() -> None:
    """Stop with a message naming the missing key, before anything needs it."""
    for name in missing_keys():
        raise ImproperlyConfigured(missing_key_message(name))
