"""The VM page's two charts as server-rendered SVG: no script, readable without one (a title, a
description, labelled axes, a <title> on every mark) and shown beside a table of the same figures.

A minimal helper of the VM page's own until the site's shared one (core/charts.py) lands."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from core.formats import when

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 14, 30  # room for the value labels on the left, dates below


@dataclass(frozen=True)
class Sample:
    at: datetime
    value: float
    label: str  # the mark's own words (its <title>): "#12, 2026-12-07 01:30: 1.5 GiB"


def _x(at: datetime, first: datetime, last: datetime) -> float:
    span = (last - first).total_seconds()
    share = (at - first).total_seconds() / span if span > 0 else 0.5
    return LEFT + share * (WIDTH - LEFT - RIGHT)


def _y(value: float, top: float) -> float:
    share = value / top if top > 0 else 0
    return HEIGHT - BOTTOM - share * (HEIGHT - TOP - BOTTOM)


def time_chart(
    samples: Sequence[Sample],
    *,
    chart_id: str,
    title: str,
    description: str,
    value_text: Callable[[float], str],
    kind: str = "line",
) -> SafeString:
    """An SVG chart of values over time: "line" (a step line with a dot per sample) or "bars"."""
    head = format_html(
        '<svg class="chart {}" id="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title {}-desc" '
        'xmlns="http://www.w3.org/2000/svg"><title id="{}-title">{}</title><desc id="{}-desc">{}</desc>',
        kind,
        chart_id,
        WIDTH,
        HEIGHT,
        chart_id,
        chart_id,
        chart_id,
        title,
        chart_id,
        description,
    )
    parts = [head]
    base = HEIGHT - BOTTOM
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#5b6775"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#5b6775"/>')
    if not samples:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="none">No figures yet</text></svg>'
        )
        return mark_safe("".join(parts))  # every interpolated text was escaped above
    top = max(s.value for s in samples) or 1
    first, last = samples[0].at, samples[-1].at
    # The value axis: zero, half and the top, in the figures' own unit.
    for value in (0, top / 2, top):
        y = _y(value, top)
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(value_text(value))}</text>'
        )
        if value:
            parts.append(
                f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#d9dee4"/>'
            )
    parts.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}" text-anchor="start">{escape(when(first))}</text>')
    if last != first:
        parts.append(
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{escape(when(last))}</text>'
        )
    if kind == "bars":
        slot = (WIDTH - LEFT - RIGHT) / max(len(samples), 1)
        width = max(min(slot * 0.7, 40), 2)
        for n, s in enumerate(samples):
            x = LEFT + slot * n + (slot - width) / 2
            y = _y(s.value, top)
            parts.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{base - y:.1f}" '
                f'fill="#2b6cb0"><title>{escape(s.label)}</title></rect>'
            )
    else:
        points = []
        for n, s in enumerate(samples):
            x, y = _x(s.at, first, last), _y(s.value, top)
            if n:
                points.append(f"{x:.1f},{points[-1].split(',')[1]}")  # a step: the total holds until the next point
            points.append(f"{x:.1f},{y:.1f}")
        parts.append(
            f'<polyline class="line" points="{" ".join(points)}" fill="none" stroke="#2b6cb0" stroke-width="2"/>'
        )
        for s in samples:
            x, y = _x(s.at, first, last), _y(s.value, top)
            parts.append(
                f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2b6cb0">'
                f"<title>{escape(s.label)}</title></circle>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text was escaped above
