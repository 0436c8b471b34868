import re
import uuid
from urllib.parse import urlparse

from django.core.exceptions import ValidationError

from ovirt.connection import API_PATH, host_problem

ENGINE_USER_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def validate_api_url(value: str) -> None:
    parsed = urlparse(value)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValidationError(
            "The engine API URL must start with https:// and name the engine's host, "
            "e.g. https://engine.example.com/ovirt-engine/api.",
            code="invalid_api_url",
        )
    if host_problem(parsed.hostname):
        raise ValidationError(host_problem(parsed.hostname), code="invalid_api_url")
    if parsed.path.rstrip("/") != API_PATH:
        raise ValidationError(
            f"The engine API URL must end in {API_PATH} (got path {parsed.path or '/'!r}).",
            code="invalid_api_url",
        )


def validate_engine_username(value: str) -> None:
    if not ENGINE_USER_RE.match(value or ""):
        raise ValidationError(
            "The user name must be in user@domain form, e.g. admin@internal.",
            code="invalid_username",
        )


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
