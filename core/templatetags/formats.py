"""The formatting layer's template filters (core.formats), builtin in every template."""

from django import template

from core import formats

register = template.Library()
NBSP = "\xa0"  # a value kept on one line in a table


@register.filter
def iec(value) -> str:
    """{{ bytes|iec }}: 1.5 MiB; "" for what is not a number."""
    try:
        return formats.iec(int(value)).replace(" ", NBSP)
    except (TypeError, ValueError):
        return ""


@register.filter
def duration(value) -> str:
    """{{ timedelta_or_seconds|duration }}: 4.6 s, 2 min 10 s."""
    try:
        return formats.duration(value).replace(" ", NBSP)
    except (TypeError, ValueError, AttributeError):
        return ""


@register.filter
def when(value, precision: str = "") -> str:
    """{{ datetime|when }}: 2026-12-07 01:30 in the site's time zone; {{ d|when:"s" }} to the second."""
    try:
        return formats.when(value, seconds=precision == "s")
    except (TypeError, ValueError, AttributeError):
        return ""


@register.filter
def ago(value) -> str:
    """{{ datetime|ago }}: 3 h 5 min ago."""
    try:
        return formats.ago(value)
    except (TypeError, ValueError, AttributeError):
        return ""


@register.filter
def plural(n, words: str) -> str:
    """{{ n|plural:"VM" }} -> 1 VM / 3 VMs; {{ n|plural:"policy,policies" }} for the irregular."""
    singular, _, many = words.partition(",")
    try:
        return formats.plural(int(n or 0), singular, many)
    except (TypeError, ValueError):
        return ""


@register.filter
def label(key, kind: str = "") -> str:
    """{{ point.strategy|label:"strategy" }}: the key's registered label (core.formats.register_labels)."""
    return formats.label(key, kind)


@register.filter
def detail(value, key: str = "") -> str:
    """{{ value|detail:key }}: an audit detail for people (core.formats.detail)."""
    return formats.detail(value, key)
