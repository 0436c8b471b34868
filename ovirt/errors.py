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
# validation messages, AppErrors.properties, and the simulator's words for the same): a VM that runs
# or does not, a disk that is illegal or has snapshots, no room, no host up, an unsupported request,
# a guest that cannot freeze. The messages hold VM and disk names too, so what says the object is
# busy is looked for first and wins: a lock on a VM named "freezer" is still waited out.
_BUSY = ("lock", "in progress", "being", "currently", "during", "try again", "wait")
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
    "active snapshot of a vm cannot be removed",
    "previewing a snapshot",
    "incremental backup is disabled",
    "is not up",
    "no host is up",
    "no active host",
    "must be larger",
    "read-only",
    "is not a data domain",
    "only applicable for data domains",
    "name is in use",
)


def lasting_refusal(fault: str) -> bool:
    """A 409 that no retry cures: raised at once instead of after half a minute of retries."""
    text = fault.lower()
    if any(words in text for words in _BUSY):
        return False
    return any(words in text for words in _LASTING)
