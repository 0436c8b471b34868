"""Scheduled work of the inventory app (django-q2 schedules call these)."""

from inventory.models import Manager


def sync_due_managers() -> int:
    """Queue a sync for every manager whose interval has passed; returns how many."""
    from inventory.sync import request_sync
    from jobs.models import Job

    due = list(Manager.objects.due_for_sync())
    for manager in due:
        request_sync(manager, origin=Job.Origin.SCHEDULE)
    return len(due)
