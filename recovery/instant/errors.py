from core.errors import OperatorError


class InstantError(OperatorError):
    """An instant restore refused or failed, in words for the operator."""
