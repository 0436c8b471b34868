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
