import datetime
import re

from croniter import CroniterBadDateError, croniter
from django.core.exceptions import ValidationError


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
