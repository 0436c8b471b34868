"""Typed readers for settings taken from the environment.

Every setting the service reads from the environment goes through one of these, so a
malformed value fails at start-up with the variable's name instead of deep inside Django.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


class EnvError(ValueError):
    pass


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def machine_uuid(path: str = "/sys/class/dmi/id/product_uuid") -> str:
    """This machine's SMBIOS UUID, lowercased ("" when the firmware gives none or it cannot be read).
    In an oVirt VM it is the VM's id: a node running inside a proxy VM knows which VM it is."""
    try:
        with open(path) as f:
            return f.read().strip().lower()
    except OSError:
        return ""


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise EnvError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise EnvError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_seconds(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of durations in seconds, each zero or more ("1,2,4")."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return tuple(default)
    try:
        values = tuple(float(item) for item in raw.split(",") if item.strip())
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not a list of seconds (for example 1,2,4)") from None
    if not values or any(not 0 <= v < 3600 for v in values):
        raise EnvError(f"{name}={raw!r}: give one or more durations from 0 to 3600 seconds")
    return values


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


def read_secret(path: Path) -> str:
    """The secret kept in `path`, or "" when it has not been created yet (see core.secrets)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def create_secret(path: Path, make) -> bool:
    """Create the secret file (mode 0600) unless it exists; True when it was created.

    A generated secret is kept on disk so sessions and encrypted credentials survive restarts;
    it is never a constant in the source.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make() + "\n")
    return True


def random_secret_key() -> str:
    return secrets.token_urlsafe(50)


# SQLite serving a web server and workers at once: WAL lets readers run beside the one writer, a
# writer takes its lock when its transaction begins (IMMEDIATE) instead of failing at once with
# "database is locked" when it upgrades a read lock, and waits up to 30 s for it.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def sqlite_database(name: str) -> dict:
    # Tests get a file beside it too, not Django's shared-cache memory database: there a writer and
    # a reader in another thread fail at once with "database table is locked" (a lock the busy
    # timeout does not wait for), which the service's own file never does.
    test_name = str(Path(name).with_name(f"test-{Path(name).name}"))
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        "OPTIONS": dict(SQLITE_OPTIONS),
        "TEST": {"NAME": test_name},
    }


def database_from_url(url: str, *, sqlite_path: Path) -> dict:
    """Translate DATABASE_URL (postgres://user:pass@host:port/name) into Django's dict."""
    if not url:
        return sqlite_database(str(sqlite_path))
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            # A kept connection is checked before reuse, so a restarted server costs no failed request.
            "CONN_HEALTH_CHECKS": True,
        }
    if parsed.scheme == "sqlite":
        return sqlite_database(parsed.path or str(sqlite_path))
    raise EnvError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite://)")
