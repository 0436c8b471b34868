import os
import tempfile
from pathlib import Path

from django.core.exceptions import ValidationError


def validate_writable_directory(value: str) -> None:
    """The path must be absolute and a directory this service can create files in.

    A missing directory is created (its parent must exist), so an operator can name a new
    folder on an already mounted NFS share.
    """
    if "\0" in value:
        raise ValidationError("The path contains a NUL character.", code="invalid_path")
    too_long = [part for part in value.split("/") if len(part.encode()) > 255]
    if too_long:
        raise ValidationError(f"A name in the path is longer than 255 bytes: {too_long[0][:40]}….", code="invalid_path")
    path = Path(value)
    if not path.is_absolute():
        raise ValidationError("The path must be absolute, e.g. /srv/backups.", code="not_absolute")
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{value} exists and is not a directory.", code="not_a_directory")
    if not path.exists():
        if not path.parent.is_dir():
            raise ValidationError(f"{path.parent} does not exist; mount or create it first.", code="missing_parent")
        try:
            path.mkdir()
        except OSError as e:
            raise ValidationError(f"{value} cannot be created: {e.strerror}.", code="not_writable") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValidationError(f"{value} is not writable by this service: {e.strerror}.", code="not_writable") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValidationError(f"{value} is not writable by this service.", code="not_writable")
