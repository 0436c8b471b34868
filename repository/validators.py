import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def resolved(path: str) -> Path:
    """The directory a destination's path leads to: links followed, `.`, `..` and repeated slashes gone."""
    return Path(os.path.realpath(path))


def normalized(path: str) -> Path:
    """The path with `.`, `..` and repeated slashes resolved as written, links not followed: what can
    be said here of a directory on another node."""
    return Path("/" + os.path.normpath(path).lstrip("/"))


def under_backup_root(real: Path) -> bool:
    """Whether a resolved directory lies under (not at) one of BACKUP_ROOTS."""
    roots = [resolved(root) for root in settings.BACKUP_ROOTS]
    return any(real != root and real.is_relative_to(root) for root in roots)


def validate_path_text(value: str) -> Path:
    """What the path says by itself, wherever its directory is: absolute, no NUL, no name too long for
    a filesystem."""
    if "\0" in value:
        raise ValidationError("The path contains a NUL character.", code="invalid_path")
    too_long = [part for part in value.split("/") if len(part.encode()) > 255]
    if too_long:
        raise ValidationError(f"A name in the path is longer than 255 bytes: {too_long[0][:40]}….", code="invalid_path")
    path = Path(value)
    if not path.is_absolute():
        raise ValidationError("The path must be absolute, e.g. /srv/backups.", code="not_absolute")
    return path


def _validate_under_root(value: str, real: Path, how: str) -> None:
    if not under_backup_root(real):
        where = f" (it {how} {real})" if real != Path(value) else ""
        raise ValidationError(
            f"{value}{where} is not under an allowed backup root: "
            f"{', '.join(map(str, settings.BACKUP_ROOTS)) or 'none is set'}. An admin sets BACKUP_ROOTS.",
            code="not_under_root",
        )


def validate_directory_elsewhere(value: str) -> None:
    """A directory of another node: what can be checked here without reading it (absolute, under one
    of BACKUP_ROOTS once `..` are resolved as written). Its node checks the rest (links, existence,
    writability) where the directory is."""
    validate_path_text(value)
    _validate_under_root(value, normalized(value), "comes to")


def validate_writable_directory(value: str) -> None:
    """The path must be an existing directory under one of BACKUP_ROOTS (after resolving `..` and
    links) that this service can create files in. Nothing is created: mount or create it first."""
    path = validate_path_text(value)
    _validate_under_root(value, resolved(value), "resolves to")
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
