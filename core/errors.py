"""The two exceptions every layer may raise, so that the job runner can tell them apart from bugs."""


class OperatorError(Exception):
    """A failure whose message is meant for the operator as it is (no traceback, no type name)."""


class Cancelled(Exception):
    """Someone asked the work to stop; it stops at its next check and cleans up."""
