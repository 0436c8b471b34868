"""Errors of the engine client, worded for the person who configured the engine."""

from core.errors import OperatorError


class EngineError(OperatorError):
    """A failure talking to an engine, or a refusal from it, worded for people."""


def fault_text(error: Exception) -> str:
    """The engine's own reason for a fault (its `detail`), else the error's text."""
    fault = getattr(error, "fault", None)
    if fault is not None and fault.detail:
        return fault.detail.strip("[]")
    return str(error)


def freeze_failed(fault: str) -> bool:
    """The guest could not freeze its filesystems (no agent, or it refused): no retry cures that."""
    return "freeze" in fault.lower()


# What the engine's 409 says when the object is in a state that waiting does not change (its
# validation messages, AppErrors.properties): a VM that runs or does not, a disk that is illegal or
# has snapshots, no room, no host up, an unsupported request, a guest that cannot freeze. The rest
# (something locked, a snapshot or backup under way, "please try again") passes: retried.
_LASTING = (
    "freeze",
    " is running",
    "is not running",
    "illegal",
    "has snapshots",
    "already exists",
    "already attached",
    "low disk space",
    "not supported",
    "should be in up or down",
    "active snapshot of a vm cannot be removed",
    "is not up",
    "no host is up",
    "must be larger",
    "read-only",
    "is not a data domain",
    "name is in use",
)


def lasting_refusal(fault: str) -> bool:
    """A 409 that no retry cures: raised at once instead of after half a minute of retries."""
    text = fault.lower()
    return any(words in text for words in _LASTING)
