"""Cron times as moments, across daylight-saving changes, the way Vixie cron (Debian's cron, and
cronie on Red Hat) runs them.

croniter is asked only about wall-clock times (naive datetimes, where it is plain calendar
arithmetic); turning a wall-clock time into a moment is done here, because croniter's own answer
on a change day is wrong both ways: when the clocks go back it returns an earlier day's time once
the repeated hour begins (so a daily 02:30 ran again at 03:00) and never returns the repeated
02:00 (so an hourly schedule skipped an hour).

The rule, Vixie cron's, for every schedule alike:
- A schedule with a wildcard in its minute or hour field ('*', '*/15') runs by the clock as it
  ticks: at every real occurrence of its times. When the clocks go back it runs in the repeated
  hour again (an hourly schedule runs at 02:00 summer time and at 02:00 winter time: every real
  hour); times the clocks skip in spring do not exist and are not made up.
- A schedule with a fixed minute and hour ('30 2 * * *', '0 1-5 * * 1') runs once per wall-clock
  time: at the first occurrence of a repeated time, and for a time the clocks skip, at the moment
  they jump (02:30 on the spring change day runs at 03:00 summer time), so no day loses its backup.
"""

from datetime import UTC, datetime, time, timedelta, tzinfo

from croniter import croniter

# Changes of the clocks are assumed smaller than this and further apart (Vixie cron assumes the
# same): wall-clock times that differ by more than the change are in the same order as their moments.
MARGIN = timedelta(hours=3)


def runs_by_the_clock(schedule: str) -> bool:
    """True when the minute or hour field is a wildcard: the schedule runs at every real
    occurrence of its times (Vixie cron's MIN_STAR/HR_STAR)."""
    minute, hour = schedule.split()[:2]
    return minute.startswith("*") or hour.startswith("*")


def next_time(schedule: str, *, after: datetime, tz: tzinfo) -> datetime:
    """The first moment the schedule runs strictly after `after`, in `tz`."""
    every = runs_by_the_clock(schedule)
    after = after.astimezone(UTC)  # arithmetic on a local time would count wall-clock hours
    # Near a change, a repeated time earlier on the clock may come later in real time.
    times = croniter(schedule, _wall(after, tz) - _shift(after, tz))
    best = end = None
    while True:
        wall = times.get_next(datetime)
        if end is not None and wall > end:
            return best.astimezone(tz)
        for moment in _moments(wall, tz, every=every):
            if moment > after and (best is None or moment < best):
                # Later times on the clock come later in real time once past the change's shift.
                best, end = moment, _wall(moment, tz) + _shift(moment, tz)


def last_time(schedule: str, *, now: datetime, tz: tzinfo) -> datetime:
    """The last moment the schedule runs at or before `now`, in `tz`."""
    every = runs_by_the_clock(schedule)
    now = now.astimezone(UTC)  # arithmetic on a local time would count wall-clock hours
    # croniter's previous time is strictly before its start: one second on, `now` itself counts.
    # Near a change, a time later on the clock may have come earlier in real time.
    start = _wall(now, tz).replace(microsecond=0) + timedelta(seconds=1) + _shift(now, tz)
    times = croniter(schedule, start)
    best = end = None
    while True:
        wall = times.get_prev(datetime)
        if end is not None and wall < end:
            return best.astimezone(tz)
        for moment in _moments(wall, tz, every=every):
            if moment <= now and (best is None or moment > best):
                best, end = moment, _wall(moment, tz) - _shift(moment, tz)


def moment_of(wall: datetime, tz: tzinfo) -> datetime:
    """The moment a wall-clock time (naive) names, as a fixed-time schedule reads it: its first
    occurrence when the clocks go back, the jump when they skip it."""
    return _moments(wall, tz, every=False)[0].astimezone(tz)


def window_end_after(moment: datetime, *, start: time, end: time, tz: tzinfo) -> datetime | None:
    """The end of the backup window from `start` to `end` (wall-clock times in `tz`) that `moment`
    falls in; None outside it. A window may wrap midnight (22:00 to 06:00). Its ends are read as the
    cron times are: a window from 02:15 starts as the clocks jump over 02:15, where a 02:30 run is due."""
    local = moment.astimezone(tz)
    today = local.date()
    for start_day in (today - timedelta(days=1), today):
        opens = moment_of(datetime.combine(start_day, start), tz)
        end_day = start_day if end > start else start_day + timedelta(days=1)
        closes = moment_of(datetime.combine(end_day, end), tz)
        # Compared as moments: within one time zone Python compares wall-clock readings, which
        # puts 02:00 winter time before 02:30 summer time.
        if opens.timestamp() <= local.timestamp() < closes.timestamp():
            return closes
    return None


def times_of_day(schedule: str) -> list[time]:
    """The wall-clock times of day a valid schedule runs at (its hour and minute fields), in order;
    on which days is the other fields' business."""
    minutes, hours = croniter(schedule).expanded[:2]
    minutes = range(60) if minutes == ["*"] else minutes
    hours = range(24) if hours == ["*"] else hours
    return [time(hour, minute) for hour in hours for minute in minutes]


def _moments(wall: datetime, tz: tzinfo, *, every: bool) -> list[datetime]:
    """The moments (UTC) a wall-clock time of the schedule runs at: one on most days, both
    occurrences of a repeated time or only the first, none or the jump for a skipped time."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if _wall(first, tz) == wall:  # the clocks went back: this time comes twice
        return [first, second] if every else [first]
    # The clocks jumped over this time (PEP 495 gives the old and the new offset's readings).
    return [] if every else [_jump(min(first, second), max(first, second), tz)]


def _jump(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The moment the clocks jump, between `before` (old offset) and `after` (new offset)."""
    old = before.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == old:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(moment: datetime, tz: tzinfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _shift(moment: datetime, tz: tzinfo) -> timedelta:
    """How far the clocks move within MARGIN of `moment`: zero but near a change (twice a year, in
    zones with summer time)."""
    return abs((moment + MARGIN).astimezone(tz).utcoffset() - (moment - MARGIN).astimezone(tz).utcoffset())
