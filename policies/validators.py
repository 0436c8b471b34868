import datetime
import re

from croniter import CroniterBadDateError, croniter
from django.core.exceptions import ValidationError
from django.utils import timezone

from policies import cron


def validate_cron(value: str) -> None:
    """Five-field cron text (minute hour day-of-month month day-of-week) that fires within a year."""
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValidationError(
            f"{value!r} is not a cron schedule; use five fields: minute hour day month weekday, e.g. '0 2 * * *'.",
            code="invalid_cron",
        )
    now = datetime.datetime.now(datetime.UTC)
    try:
        upcoming = croniter(value, now, max_years_between_matches=1).get_next(datetime.datetime)
    except (CroniterBadDateError, ValueError):
        upcoming = None
    if upcoming is None or upcoming > now + datetime.timedelta(days=366):
        raise ValidationError(f"{value!r} never fires: no date matches it within a year.", code="cron_never_fires")


# How many of a schedule's times of day a message names before it counts the rest.
SHOWN_TIMES = 4


def validate_regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as e:
        raise ValidationError(f"Not a valid regular expression: {e}.", code="invalid_regex") from None


def validate_string_list(value) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError("Must be a list of non-empty strings.", code="invalid_list")


def window_problems(start: datetime.time | None, end: datetime.time | None) -> dict[str, str]:
    """What is wrong with a backup window, by field (the model, its form and the API all ask here)."""
    if (start is None) != (end is None):
        return {"window_end" if end is None else "window_start": "Give both ends of the backup window, or neither."}
    if start is not None and start == end:
        return {"window_end": "The backup window ends when it starts: it would be empty."}
    return {}


def times_outside_window(
    schedule: str, start: datetime.time, end: datetime.time, *, today: datetime.date | None = None
) -> list[datetime.time]:
    """The times of day a valid schedule runs at when none of them falls in the backup window from
    `start` to `end` (site time), as the scheduler judges a due run (cron.window_end_after: a run
    due outside the window is not started); [] when one does. `today` is injected by tests."""
    tz = timezone.get_current_timezone()
    times = cron.times_of_day(schedule)
    today = today or timezone.localdate()
    # Two days: a change of the clocks can move a time out of the window for its one day, and two
    # changes are never a day apart.
    for day in (today, today + datetime.timedelta(days=1)):
        for at in times:
            due = cron.moment_of(datetime.datetime.combine(day, at), tz)
            if cron.window_end_after(due, start=start, end=end, tz=tz) is not None:
                return []
    return times


def schedule_window_problems(schedule: str, start: datetime.time | None, end: datetime.time | None) -> dict[str, str]:
    """A schedule that never runs inside the backup window: the scheduler starts no run due outside
    it, so the policy would never back up by itself (the model and the API ask here)."""
    if start is None or end is None or start == end or not schedule:
        return {}  # no window, or window_problems says what is wrong with it
    try:
        validate_cron(schedule)
    except ValidationError:
        return {}  # the schedule's own field says why
    times = times_outside_window(schedule, start, end)
    if not times:
        return {}
    shown = [f"{t:%H:%M}" for t in times[:SHOWN_TIMES]]
    if len(times) > SHOWN_TIMES:
        when = f"{', '.join(shown)} and {len(times) - SHOWN_TIMES} more times of day, all"
    elif len(times) > 1:
        when = f"{', '.join(shown[:-1])} and {shown[-1]}, {'both' if len(times) == 2 else 'all'}"
    else:
        when = shown[0] + ","
    return {
        "window_start": f"The schedule runs at {when} outside the backup window ({start:%H:%M} to {end:%H:%M}): "
        "no scheduled backup would ever start. Move the window or the schedule."
    }


def proof_problems(*, prove_restores: bool, proof_schedule: str, proof_cluster: str, schedule: str) -> dict[str, str]:
    """What is wrong with a policy's restore proof settings, by field (the model, its form and the API
    all ask here). The schedule's own form is checked by its field's validator."""
    problems = {}
    cluster = proof_cluster.strip()
    if cluster:
        from inventory.models import Cluster

        if not Cluster.objects.filter(name=cluster, missing_since=None).exists():
            problems["proof_cluster"] = f"No cluster named {cluster} in the inventory (sync its manager first)."
    if prove_restores and proof_schedule.split() == schedule.split():
        problems["proof_schedule"] = (
            "The proofs would start with the backups and prove the day before's: choose a time after them."
        )
    return problems
