import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def resolved(path: str) -> Path:
    """The directory a destination's path leads to: links followed, `.`, `..` and repeated slashes gone."""
    return Path(os.path.realpath(path))


def under_backup_root(real: Path) -> bool:
    """Whether a resolved directory lies under (not at) one of BACKUP_ROOTS."""
    roots = [resolved(root) for root in settings.BACKUP_ROOTS]
    return any(real != root and real.is_relative_to(root) for root in roots)


def validate_writable_directory(value: str) -> None:
    """The path must be an existing directory under one of BACKUP_ROOTS (after resolving `..` and
    links) that this service can create files in. Nothing is created: mount or create it first."""
    if "\0" in value:
        raise ValidationError("The path contains a NUL character.", code="invalid_path")
    too_long = [part for part in value.split("/") if len(part.encode()) > 255]
    if too_long:
        raise ValidationError(f"A name in the path is longer than 255 bytes: {too_long[0][:40]}….", code="invalid_path")
    path = Path(value)
    if not path.is_absolute():
        raise ValidationError("The path must be absolute, e.g. /srv/backups.", code="not_absolute")
    real = resolved(value)
    if not under_backup_root(real):
        where = f" (it resolves to {real})" if real != path else ""
        raise ValidationError(
            f"{value}{where} is not under an allowed backup root: "
            f"{', '.join(map(str, settings.BACKUP_ROOTS)) or 'none is set'}. An admin sets BACKUP_ROOTS.",
            code="not_under_root",
        )
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{value} exists and is not a directory.", code="not_a_directory")
    if not path.exists():
        raise ValidationError(f"{value} does not exist: create it (or mount the share) first.", code="missing")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValidationError(f"{value} is not writable by this service: {e.strerror}.", code="not_writable") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValidationError(f"{value} is not writable by this service.", code="not_writable")
