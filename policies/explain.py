"""What a policy's settings mean, in words: a cron schedule said as people say it, the next times it
runs (asked of policies.cron, the code the ticker runs by), and what its retention would keep today
(asked of repository.retention, the code the prune runs by). For the policy's form and page.

The schedule's fields are read by croniter (its `expanded` form), the parser the validator and the
scheduler use: this module only puts the values it returns into words."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time

from croniter import croniter
from django.core.exceptions import ValidationError
from django.utils import timezone

from core.formats import plural
from inventory.models import VM
from policies import cron
from policies.validators import schedule_window_problems, validate_cron
from repository.retention import DELETE, KEEP, MERGE, plan_policy

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
MONTHS = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}
# The parser's messages ("[61 * * * *] is not acceptable, out of range") after its bracketed echo.
PARSER_WORDS = {
    "out of range": "a value is out of its field's range (minute 0-59, hour 0-23, day 1-31, month 1-12, "
    "weekday 0-7 or sun-sat)",
}


@dataclass
class SchedulePreview:
    """A schedule in words and its next run times, or why it is not a schedule; with a backup window,
    which runs fall outside it (the scheduler starts none of those) and, when all do, the model's refusal."""

    schedule: str
    words: str = ""
    runs: list[datetime] = field(default_factory=list)
    error: str = ""
    outside: list[bool] = field(default_factory=list)  # per run: due outside the backup window
    window_error: str = ""

    @property
    def runs_with_days(self) -> list[tuple[datetime, str, bool]]:
        """Each run with its weekday in the site's time zone ("Monday": what "Monday to Friday" is read
        against) and whether it falls outside the backup window."""
        outside = self.outside or [False] * len(self.runs)
        return [
            (moment, DAYS[(timezone.localtime(moment).weekday() + 1) % 7], out)
            for moment, out in zip(self.runs, outside, strict=True)
        ]


def preview_schedule(
    schedule: str,
    *,
    count: int = 5,
    after: datetime | None = None,
    window_start: time | None = None,
    window_end: time | None = None,
) -> SchedulePreview:
    """The words and the next `count` run times of `schedule` (site time zone); the validator's
    refusal, with the parser's reason, when it is not a schedule. With both ends of a backup window,
    the runs it would not start are marked, by the scheduler's own test (cron.window_end_after)."""
    schedule = " ".join(schedule.split())
    problem = schedule_problem(schedule)
    if problem:
        return SchedulePreview(schedule=schedule, error=problem)
    preview = SchedulePreview(schedule=schedule, words=describe(schedule), runs=next_runs(schedule, count, after=after))
    if window_start is not None and window_end is not None and window_start != window_end:
        tz = timezone.get_current_timezone()
        preview.outside = [
            cron.window_end_after(moment, start=window_start, end=window_end, tz=tz) is None for moment in preview.runs
        ]
        preview.window_error = schedule_window_problems(schedule, window_start, window_end).get("window_start", "")
    return preview


def schedule_problem(schedule: str) -> str:
    """Why the model would refuse `schedule` (its field's validator), in words; "" when it is fine."""
    if not schedule:
        return "Give a schedule: five fields, minute hour day month weekday, e.g. 30 1 * * * (01:30 every day)."
    try:
        validate_cron(schedule)
    except ValidationError as e:
        message = " ".join(e.messages)
        try:
            croniter(schedule)
        except Exception as parser:  # croniter's errors share no base class but Exception
            # Past its echo of the text and "is not acceptable": the reason, when it gives one (of
            # five fields: a wrong count is the validator's message already).
            reason = str(parser).split("]", 1)[-1].replace("is not acceptable", "").strip(" ,.")
            if reason and len(schedule.split()) == 5:
                message += f" The parser says: {PARSER_WORDS.get(reason, reason)}."
        return message
    return ""


def next_runs(schedule: str, count: int = 5, *, after: datetime | None = None) -> list[datetime]:
    """The next `count` moments the schedule runs, one after another, as the ticker finds them
    (Policy.next_run is cron.next_time from now; the same call here, repeated)."""
    tz = timezone.get_current_timezone()
    moment = after or timezone.now()
    runs = []
    for _ in range(count):
        moment = cron.next_time(schedule, after=moment, tz=tz)
        runs.append(moment)
    return runs


def describe(schedule: str) -> str:
    """A valid five-field schedule in words: "At 01:30 every day", "Every 4 hours at minute 0",
    "At 22:00 on Monday to Friday"."""
    parsed = croniter(schedule)
    minutes, hours, days, months, weekdays = parsed.expanded
    nth = getattr(parsed, "nth_weekday_of_month", {}) or {}
    times, repeating = _times(minutes, hours)
    on = _days(days, weekdays, nth)
    month_words = "" if months == ["*"] else f" in {_named_runs(months, MONTHS)}"
    if not on and not month_words:
        return times if repeating else f"{times} every day"
    return f"{times}{' ' + on if on else ''}{month_words}"


def _times(minutes: list, hours: list) -> tuple[str, bool]:
    """The time of day part, and whether it repeats within the day (then "every day" goes unsaid)."""
    every_minute, every_hour = minutes == ["*"] or len(minutes) == 60, hours == ["*"] or len(hours) == 24
    step_minutes, step_hours = _step(minutes, 60), _step(hours, 24)
    if every_minute and every_hour:
        return "Every minute", True
    if every_hour:
        if step_minutes:
            return f"Every {step_minutes} minutes", True
        return f"Every hour at {_minute_words(minutes)}", True
    if step_hours and len(minutes) == 1:
        return f"Every {step_hours} hours at minute {minutes[0]}", True
    if len(hours) * len(minutes) <= 6 and not every_minute:
        return "At " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes]), False
    what = "Every minute" if every_minute else (f"Every {step_minutes} minutes" if step_minutes else None)
    if _contiguous(hours):
        span = f"from {hours[0]:02d}:00 to {hours[-1]:02d}:59"
    else:
        span = "in the hours " + _join([f"{h:02d}" for h in hours])
    if what:
        return f"{what} {span}", True
    return f"Every hour at {_minute_words(minutes)}, {span}", True


def _minute_words(minutes: list) -> str:
    return f"minute {minutes[0]}" if len(minutes) == 1 else f"minutes {_join([str(m) for m in minutes])}"


def _days(days: list, weekdays: list, nth: dict) -> str:
    """The days part: "" for every day; cron runs on either list when both are restricted."""
    parts = []
    if days != ["*"]:
        named = [("the last day" if d == "l" else str(d)) for d in days]
        if named == ["the last day"]:
            parts.append("on the last day of the month")
        else:
            parts.append(f"on day{'s' if len(named) > 1 else ''} {_join(named)} of the month")
    if weekdays != ["*"]:
        if nth:
            names = [
                f"the {_join([ORDINALS.get(n, str(n)) for n in sorted(nth[d])])} {DAYS[d % 7]}" for d in sorted(nth)
            ]
            parts.append(f"on {_join(names)} of the month")
        else:
            # Monday first, as people count a week: 0 Monday ... 6 Sunday.
            monday_first = sorted({(d + 6) % 7 for d in weekdays if isinstance(d, int)})
            parts.append("on " + _named_runs(monday_first, [DAYS[(i + 1) % 7] for i in range(7)]))
    return " or ".join(parts)


def _step(values: list, size: int) -> int:
    """N when the values are 0, N, 2N... through the whole field (*/N); 0 otherwise."""
    if values == ["*"] or len(values) < 2 or values[0] != 0:
        return 0
    step = values[1] - values[0]
    return step if values == list(range(0, size, step)) else 0


def _contiguous(values: list) -> bool:
    return all(isinstance(v, int) for v in values) and values == list(range(values[0], values[-1] + 1))


def _join(items: list) -> str:
    """ "a", "a and b", "a, b and c"."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _named_runs(numbers: list[int], names: list[str]) -> str:
    """Numbers (in order) named, runs of three or more as "Monday to Friday"."""
    groups, start = [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            run = numbers[start:i]
            if len(run) >= 3:
                groups.append(f"{names[run[0]]} to {names[run[-1]]}")
            else:
                groups.extend(names[n] for n in run)
            start = i
    return _join(groups)


@dataclass
class RetentionSummary:
    """What pruning now would do to a policy's own points, in counts and reasons."""

    points: int = 0  # the policy's own backups (points) on its VMs' chains
    kept: int = 0
    removed: int = 0
    merged: int = 0
    removed_why: list[str] = field(default_factory=list)
    kept_by_others: int = 0  # points of other policies or made by hand, on the same chains: always kept
    # (VM name, VM id, its backups, kept, removed, merged) by name: one row per VM and destination
    by_vm: list[tuple[str, int, int, int, int, int]] = field(default_factory=list)

    @property
    def words(self) -> str:
        if not self.points:
            return "This policy has no backups yet: nothing to keep or remove."
        text = f"Keeps {self.kept} of {plural(self.points, 'backup')}"
        if not self.removed and not self.merged:
            return text + "; would remove none."
        changes = []
        if self.removed:
            why = f" ({'; '.join(self.removed_why)})" if self.removed_why else ""
            changes.append(f"would remove {self.removed}{why}")
        if self.merged:
            changes.append(f"would merge {self.merged} into the kept incrementals that depend on them")
        return f"{text}; {' and '.join(changes)}."


def summarize_retention(policy, *, now: datetime | None = None) -> RetentionSummary:
    """The prune preview's decisions (repository.retention.plan_policy) counted: how many of the
    policy's points it keeps, removes and merges now, and the rules that remove them."""
    summary = RetentionSummary()
    why = Counter()
    for (vm_id, _destination_id), plan in plan_policy(policy=policy, now=now).items():
        mine = [d for d in plan.decisions if d.point.governed]
        summary.kept_by_others += len(plan.decisions) - len(mine)
        actions = Counter(d.action for d in mine)
        summary.points += len(mine)
        summary.kept += actions[KEEP]
        summary.removed += actions[DELETE]
        summary.merged += actions[MERGE]
        why.update(d.reason.removeprefix("deleted: ") for d in mine if d.action == DELETE)
        summary.by_vm.append((vm_id, len(mine), actions[KEEP], actions[DELETE], actions[MERGE]))
    names = dict(VM.objects.filter(pk__in=[row[0] for row in summary.by_vm]).values_list("pk", "name"))
    summary.by_vm = sorted((names.get(row[0], f"VM {row[0]}"), *row) for row in summary.by_vm)
    summary.removed_why = [reason for reason, _ in why.most_common()]
    return summary
