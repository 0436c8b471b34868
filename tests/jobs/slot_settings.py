"""The site's settings plus a job kind of the tests' own (tests.jobs.slot_app), for worker processes
started by tests/jobs/test_slots.py."""

from backupsite.settings import *  # noqa: F403
from backupsite.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.jobs.slot_app"]
