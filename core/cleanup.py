"""One cleanup stack for multi-step work: what was done is undone, newest first, whatever happens."""

import logging
from collections.abc import Callable

log = logging.getLogger("cleanup")


class Cleanup:
    """Undo steps registered as work proceeds; run newest first, always, each one guarded.

    `job` is anything with a `log(level, message)` method (a Job), so that a failed step is seen;
    `describe` puts a step's error in words (the engine client's, for steps that call the engine).
    A step that undoes a recorded engine object drops the record itself, once undone: a step that
    fails keeps it, for the reaper to retry.
    """

    def __init__(self, job=None, *, describe: Callable[[BaseException], str] = str):
        self.job = job
        self.describe = describe
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self.failures: list[str] = []

    def add(self, what: str, fn: Callable[[], None]) -> Callable[[], None]:
        self._steps.append((what, fn))
        return fn

    def discard(self, fn: Callable[[], None]) -> None:
        """Drop a step: pass the object `add` returned (a bound method is a new object each time)."""
        self._steps = [(w, f) for w, f in self._steps if f is not fn]

    def commit(self) -> None:
        """The work succeeded: forget the undo steps."""
        self._steps.clear()

    def run(self) -> None:
        while self._steps:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as e:
                log.exception("cleanup step %s failed", what)
                why = self.describe(e).rstrip(".")
                self.failures.append(f"{what} failed: {why}")
                if self.job:
                    self.job.log("error", f"Cleanup: {what} failed: {why}")

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.run()
        if exc is not None and self.failures:
            # The first failure stays the error; what its cleanup could not undo is told after it.
            exc.add_note("Cleanup: " + "; ".join(self.failures) + ".")
