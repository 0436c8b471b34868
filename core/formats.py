"""The one formatting layer: what pages, the CLI and the API's human-readable fields show people.

Sizes in IEC units (KiB, MiB, GiB: powers of 1024, named as such), durations as "4.6 s" or
"2 min 10 s", one date format in the site's time zone, counts with their plural, and labels
instead of keys. The template filters of the same names are in core.templatetags.formats (a
builtin: no {% load %} needed); the apps above register the labels of their keys here."""

from datetime import datetime, timedelta

from django.utils import timezone

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
DATE_FORMAT = "%Y-%m-%d %H:%M"  # the site's one date format, in its time zone (settings.TIME_ZONE)
SECONDS_FORMAT = "%Y-%m-%d %H:%M:%S"  # the same, to the second: for titles and event logs

# kind -> key -> label, filled by the apps that own the keys (strategies, kinds, audit actions...)
_labels: dict[str, dict[str, str]] = {}


def iec(n: int | float | None) -> str:
    """1536 -> "1.5 KiB"; whole bytes below 1 KiB ("512 bytes"); "" for None."""
    if n is None:
        return ""
    n = float(n)
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            break
        n /= 1024
    if unit == "bytes":
        return "1 byte" if n == 1 else f"{n:.0f} bytes"
    return f"{n:.1f} {unit}"


def duration(value: timedelta | float | int | None) -> str:
    """A time span for people: "0.6 s", "4.6 s", "59 s", "2 min 10 s", "3 h 5 min", "2 d 4 h"; "" for None.

    Two units at most: the second is rounded away below the first's scale, as people read it."""
    if value is None or value == "":
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{sign}{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{sign}{whole} s"
    for big, big_name, small, small_name in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= big:
            first, rest = divmod(whole, big)
            second = rest // small
            return f"{sign}{first} {big_name}" + (f" {second} {small_name}" if second else "")
    return f"{sign}{whole} s"  # pragma: no cover (60 s and more always match above)


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A moment in the site's one format and time zone: "2026-12-07 01:30"; "" for None."""
    if value is None or value == "":
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime(SECONDS_FORMAT if seconds else DATE_FORMAT)


def ago(value: datetime | None, *, now: datetime | None = None) -> str:
    """How long ago: "4.6 s ago", "3 h 5 min ago", "in 2 min" for the future; "" for None."""
    if value is None or value == "":
        return ""
    delta = (now or timezone.now()) - value
    if delta.total_seconds() < 0:
        return f"in {duration(-delta)}"
    if delta.total_seconds() < 1:
        return "just now"
    return f"{duration(delta)} ago"


def plural(n: int | None, singular: str, many: str = "") -> str:
    """1 -> "1 VM", 3 -> "3 VMs"; `many` for the irregular ("policy", "policies")."""
    n = n or 0
    return f"{n} {singular if n == 1 else (many or singular + 's')}"


def register_labels(kind: str, labels: dict[str, str]) -> None:
    """An app names its keys of this kind (strategy, job kind, audit action...) for people."""
    _labels.setdefault(kind, {}).update(labels)


def label(key: str | None, kind: str = "") -> str:
    """The registered label of a key, or the key made readable ("policy_changed" -> "Policy changed")."""
    if not key:
        return ""
    found = _labels.get(kind, {}).get(key)
    if found:
        return found
    text = str(key).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


# An audit event's detail keys whose values are keys of a registered kind (the rest are shown as
# they are: names, ids, addresses must not be reworded).
DETAIL_KINDS = {"type": "point type", "channel": "alert_channel"}


def detail(value: object, key: str = "") -> str:
    """One value of an audit event's details for people: a list as "a, b", yes/no, a nested mapping
    as "Key: value; ...", and a key of a registered kind by its label ("email" -> "E-mail")."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(detail(v, key) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{label(k)}: {detail(v, k)}" for k, v in value.items())
    if key in DETAIL_KINDS and isinstance(value, str):
        return label(value, DETAIL_KINDS[key])
    return str(value)
