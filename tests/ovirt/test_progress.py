import threading

from django.db import OperationalError

from ovirt.transfers import Progress


class BusyThenFreeJob:
    """A job whose first progress write meets a locked database (SQLite while a test or another writer
    holds the lock), as the image transfers' reporter thread met it."""

    pk = 7

    def __init__(self):
        self.written = []
        self.second = threading.Event()

    def set_progress(self, done, total):
        if not self.written:
            self.written.append(None)
            raise OperationalError("database is locked")
        self.written.append(done)
        self.second.set()

    def cancel_is_requested(self):
        return False


def test_it_skips_one_progress_write_when_the_database_is_busy_and_goes_on():
    job = BusyThenFreeJob()
    with Progress(job, base=0, total=100, on_cancel=lambda: None, interval=0.01) as progress:
        progress.update(40)
        assert job.second.wait(10), "the reporter stopped at the first locked write"
    assert job.written[1] == 40
