"""Small charts drawn on the server as SVG, for every app's pages: no JavaScript, nothing from a CDN.

Two kinds: bars stacked per day (jobs succeeded, failed and skipped each day) and a line over an
area (a destination's use over 30 days, bytes over time). Each is a `Chart`: `{{ chart }}` in a
template renders a <figure> with the SVG (role="img", aria-label, <title> and <desc>), its legend,
its axes' labels in people's units (core.formats: IEC sizes for bytes) and the same figures as a
table in a <details> below it, so the chart reads without images, CSS or a screen. A page may add
columns of its own to that table (`Column`: what each bar or point is made of).

Colours come from CSS classes (static/css/site.css, "Charts"): each series is drawn with the
classes `s<index>` and `s-<key>` (`s-failed`), so a page may colour a key of its own. A fill
presentation attribute is set as well (CSS overrides it), for an SVG read on its own; the site's
Content-Security-Policy refuses style attributes, never presentation attributes."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from core.formats import iec

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 84, 10, 34, 30  # room for the y labels, the legend and the x labels
CHAR = 10  # about a character's width at a phone's font (19px, site.css), for room to leave for labels
PALETTE = ("#2f855a", "#b83232", "#b7791f", "#2b6cb0", "#6b46c1", "#718096")
NO_DATA = "No data"


@dataclass(frozen=True)
class Series:
    """One thing counted or measured: `key` names its CSS class (s-<key>), `label` is for people,
    `values` one per label of the chart (None: not known then)."""

    key: str
    label: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Column:
    """A column of a chart's figures table beside its series' own: a header and one cell per label
    (a backup's own size beside the running total the line draws)."""

    header: str
    cells: Sequence[str]


def _more(rows: list[list[str]], more: Sequence[Column]) -> list[list[str]]:
    return [[*row, *(c.cells[i] for c in more)] for i, row in enumerate(rows)]


@dataclass(frozen=True)
class Chart:
    """A drawn chart: the SVG, and the rows of its table (a label, then one cell per series)."""

    svg: Markup
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    css_class: str = ""

    def table(self) -> Markup:
        if not self.rows:
            return Markup("")
        head = "".join(f'<th scope="col">{escape(h)}</th>' for h in self.headers)
        body = "".join(
            "<tr>"
            + f'<th scope="row">{escape(row[0])}</th>'
            + "".join(f"<td>{escape(c)}</td>" for c in row[1:])
            + "</tr>"
            for row in self.rows
        )
        return Markup(
            f'<details class="chart-figures"><summary>The figures of “{escape(self.title)}”</summary>'
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></details>'
        )

    def __html__(self) -> Markup:
        return Markup(f'<figure class="chart {escape(self.css_class)}">{self.svg}{self.table()}</figure>')

    def __str__(self) -> Markup:
        # A template renders str(value) and escapes it unless the result is marked safe (Django
        # honours __html__ on what str() returns, a Markup).
        return self.__html__()


def count(n: float) -> str:
    """A count on an axis or in a table: whole numbers with thousands separators."""
    return f"{round(n):,}"


def _num(v: float) -> str:
    """A value in an attribute, exactly (data-value: what a test or a script reads back)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def nice_ticks(top: float, *, base: int = 10, ticks: int = 4) -> list[float]:
    """Round steps from 0 to at least `top`: 0, 5, 10, 15, 20 (base 10) or, for bytes (base 1024),
    steps of 1, 2, 2.5 or 5 times a power of ten of the unit top falls in (0, 256 MiB, 512 MiB...)."""
    if top <= 0:
        return [0, 1]
    unit = 1
    if base == 1024:
        while top / unit >= 1024:
            unit *= 1024
    raw = top / unit / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = [m * magnitude for m in (1, 2, 2.5, 5, 10)]
    if base == 10:
        # Counts are whole: a step of 2.5 would put gridlines at 2.5 and 7.5, labelled 2 and 8.
        steps = [s for s in steps if s >= 1 and float(s).is_integer()] or [1]
    step = next((s for s in steps if s >= raw), steps[-1]) * unit
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _svg(title: str, desc: str, body: str, *, width: int, height: int, css_class: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(css_class)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{body}</svg>"
    )


def _no_data(title: str, desc: str, *, width: int, height: int, css_class: str) -> Chart:
    height = min(height, 80)  # a line of text, not an empty frame
    body = f'<text class="no-data" x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle">{NO_DATA}</text>'
    return Chart(
        _svg(title, f"{desc} {NO_DATA}.".strip(), body, width=width, height=height, css_class=css_class),
        title,
        [],
        css_class=css_class,
    )


def _left(ticks: list[float], fmt: Callable[[float], str]) -> int:
    """The room for the y axis' labels: LEFT, more when its longest label ("40.0 MiB/h") needs it."""
    return max(LEFT, 12 + CHAR * max(len(fmt(t)) for t in ticks))


def _legend(series: Sequence[Series], *, left: int, colour: str = "") -> str:
    parts, x = [], left
    for i, s in enumerate(series):
        parts.append(
            f'<g class="legend-item"><rect class="s{i} s-{escape(s.key)}" x="{x}" y="6" width="12" height="12" '
            f'fill="{colour or PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 16}" y="17">{escape(s.label)}</text></g>'
        )
        x += 28 + 11 * len(s.label)  # room for the label at a phone's larger font too
    return f'<g class="legend">{"".join(parts)}</g>'


def _y_axis(
    ticks: list[float], *, scale: Callable[[float], float], left: int, width: int, fmt: Callable[[float], str]
) -> str:
    parts = []
    for t in ticks:
        y = scale(t)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d9dee4"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>'
        )
    return f'<g class="y-axis">{"".join(parts)}</g>'


def _x_labels(labels: Sequence[str], centers: list[float], *, width: int, height: int, every: int) -> str:
    parts = []
    for i, (text, x) in enumerate(zip(labels, centers, strict=True)):
        if i % every:
            continue
        # Centred under its point, unless that would cut it at the right edge (a line's last point).
        anchor = "end" if x + CHAR * len(text) / 2 > width else "middle"
        parts.append(f'<text class="tick" x="{x:.1f}" y="{height - 6}" text-anchor="{anchor}">{escape(text)}</text>')
    return f'<g class="x-axis">{"".join(parts)}</g>'


def _every(n: int, width: int, left: int) -> int:
    """Label every how many x positions so that labels (about 55 units each at a phone's font) do not overlap."""
    room = max((width - left - RIGHT) // 55, 1)
    return max(math.ceil(n / room), 1)


def stacked_bars(
    *,
    labels: Sequence[str],
    series: Sequence[Series],
    title: str,
    desc: str = "",
    fmt: Callable[[float], str] = count,
    base: int = 10,
    full_labels: Sequence[str] | None = None,
    more: Sequence[Column] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
    css_class: str = "",
) -> Chart:
    """One bar per label (a day), its series stacked bottom up in their order; a bar's height is
    its total over the axis' top. `full_labels` name the bars in titles and the table (a date)
    when `labels` are shortened for the axis. Counts by default; pass base=1024 with a bytes `fmt`
    for an IEC axis. The table has a Total column when more than one series is stacked, then the
    `more` columns. "No data" when every value is 0 or unknown."""
    css_class = f"chart-bars {css_class}".strip()
    names = list(full_labels or labels)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _no_data(title, desc, width=width, height=height, css_class=css_class)
    ticks = nice_ticks(max(totals), base=base)
    left = _left(ticks, fmt)
    plot_h = height - TOP - BOTTOM
    slot = (width - left - RIGHT) / len(labels)
    bar_w = max(slot * 0.7, 1)

    def y_of(v: float) -> float:
        return TOP + plot_h - v / ticks[-1] * plot_h

    bars = []
    for i, name in enumerate(names):
        x = left + i * slot + (slot - bar_w) / 2
        bottom, segments = 0.0, []
        for j, s in enumerate(series):
            v = s.values[i] or 0
            if not v:
                continue
            top = bottom + v
            segments.append(
                f'<rect class="bar s{j} s-{escape(s.key)}" x="{x:.2f}" y="{y_of(top):.2f}" width="{bar_w:.2f}" '
                f'height="{y_of(bottom) - y_of(top):.2f}" fill="{PALETTE[j % len(PALETTE)]}" data-value="{_num(v)}">'
                f"<title>{escape(name)}: {escape(fmt(v))} {escape(s.label.lower())}</title></rect>"
            )
            bottom = top
        bars.append(f'<g class="day">{"".join(segments)}</g>')
    centers = [left + (i + 0.5) * slot for i in range(len(labels))]
    body = (
        _legend(series, left=left)
        + _y_axis(ticks, scale=y_of, left=left, width=width, fmt=fmt)
        + f'<g class="bars">{"".join(bars)}</g>'
        + _x_labels(labels, centers, width=width, height=height, every=_every(len(labels), width, left))
    )
    stacked = len(series) > 1  # one series' total is itself
    rows = [
        [name, *(fmt(s.values[i] or 0) for s in series), *([fmt(totals[i])] if stacked else [])]
        for i, name in enumerate(names)
    ]
    return Chart(
        _svg(title, desc, body, width=width, height=height, css_class=css_class),
        title,
        ["", *(s.label for s in series), *(["Total"] if stacked else []), *(c.header for c in more)],
        _more(rows, more),
        css_class,
    )


def line_chart(
    *,
    labels: Sequence[str],
    series: Series,
    title: str,
    desc: str = "",
    fmt: Callable[[float], str] = iec,
    base: int = 1024,
    full_labels: Sequence[str] | None = None,
    more: Sequence[Column] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
    css_class: str = "",
) -> Chart:
    """One line over the labels (days), with the area under it filled, from 0 up; unknown values
    (None) break the line. Bytes by default (IEC axis); pass fmt=count, base=10 for counts. The
    table has the `more` columns after the series'."""
    css_class = f"chart-line {css_class}".strip()
    names = list(full_labels or labels)
    known = [v for v in series.values if v is not None]
    if not labels or not any(known):
        return _no_data(title, desc, width=width, height=height, css_class=css_class)
    ticks = nice_ticks(max(known), base=base)
    left = _left(ticks, fmt)
    plot_h = height - TOP - BOTTOM
    step = (width - left - RIGHT) / max(len(labels) - 1, 1)
    xs = [left + i * step for i in range(len(labels))] if len(labels) > 1 else [left + (width - left - RIGHT) / 2]

    def y_of(v: float) -> float:
        return TOP + plot_h - v / ticks[-1] * plot_h

    runs, run = [], []  # unbroken stretches of known values
    for x, v in zip(xs, series.values, strict=True):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append((x, y_of(v)))
    if run:
        runs.append(run)
    base_y = y_of(0)
    shapes = []
    for r in runs:
        line = " ".join(f"{x:.2f},{y:.2f}" for x, y in r)
        area = f"{r[0][0]:.2f},{base_y:.2f} {line} {r[-1][0]:.2f},{base_y:.2f}"
        shapes.append(
            f'<polygon class="area s0 s-{escape(series.key)}" points="{area}" fill="{PALETTE[3]}" fill-opacity="0.2"/>'
            f'<polyline class="line s0 s-{escape(series.key)}" points="{line}" fill="none" stroke="{PALETTE[3]}" '
            f'stroke-width="2"/>'
        )
    dots = "".join(
        f'<circle class="dot s0 s-{escape(series.key)}" cx="{x:.2f}" cy="{y_of(v):.2f}" r="2.5" fill="{PALETTE[3]}" '
        f'data-value="{_num(v)}"><title>{escape(name)}: {escape(fmt(v))}</title></circle>'
        for x, v, name in zip(xs, series.values, names, strict=True)
        if v is not None
    )
    body = (
        _legend([series], left=left, colour=PALETTE[3])
        + _y_axis(ticks, scale=y_of, left=left, width=width, fmt=fmt)
        + f'<g class="plot">{"".join(shapes)}{dots}</g>'
        + _x_labels(labels, xs, width=width, height=height, every=_every(len(labels), width, left))
    )
    rows = [[name, "—" if v is None else fmt(v)] for name, v in zip(names, series.values, strict=True)]
    return Chart(
        _svg(title, desc, body, width=width, height=height, css_class=css_class),
        title,
        ["", series.label, *(c.header for c in more)],
        _more(rows, more),
        css_class,
    )
