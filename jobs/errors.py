"""What a job handler raises: JobError for a failure people should read as it is, JobCancelled when
someone asked the job to stop. The engine client raises the same kinds (core.errors), so the
runner treats an EngineError like a JobError."""

from core.errors import Cancelled, OperatorError


class JobError(OperatorError):
    """A failure whose message is meant for the operator as it is."""


class JobCancelled(Cancelled):
    """The job was asked to stop, and stopped."""


class IllegalTransition(Exception):
    """A job was asked to move to a status its current status does not lead to."""


class SlotTaken(Exception):
    """A job cannot start now: one of the slots it needs is full (the message names the limit)."""


class AlreadyActive(ValueError):
    """A request for work that a job already queued or running does (the API answers 409)."""

    def __init__(self, message: str, job):
        super().__init__(message)
        self.job = job
