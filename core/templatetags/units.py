from django import template

from core.units import iec as iec_text

register = template.Library()


@register.filter
def iec(value) -> str:
    """{{ bytes|iec }}: 1.5 MiB (core.units.iec); "" for what is not a number."""
    try:
        return iec_text(int(value)).replace(" ", "\xa0")  # kept on one line in a table
    except (TypeError, ValueError):
        return ""
