from core.errors import OperatorError


class FilesError(OperatorError):
    """What a person asked of a backup's files cannot be done; the message says why and what to do."""


class NotFound(FilesError):
    """A path that is not in the backup's filesystem (a 404 on pages and in the API)."""
