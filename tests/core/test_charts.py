"""core.charts: server-drawn SVG charts that parse, measure what they say and read without the picture."""

import xml.etree.ElementTree as ET

from core.charts import Column, Series, count, line_chart, nice_ticks, stacked_bars
from core.formats import iec

SVG = "{http://www.w3.org/2000/svg}"


def _parse(chart):
    return ET.fromstring(str(chart.svg))


def test_it_draws_stacked_bars_whose_heights_are_proportional_to_their_values():
    chart = stacked_bars(
        labels=["12-05", "12-06", "12-07"],
        series=[Series("succeeded", "Succeeded", [4, 10, 0]), Series("failed", "Failed", [1, 0, 2])],
        title="Backup jobs per day",
        desc="Succeeded and failed backups.",
    )
    svg = _parse(chart)
    assert svg.get("role") == "img" and svg.get("aria-label") == "Backup jobs per day"
    assert svg.find(f"{SVG}title").text == "Backup jobs per day"
    assert svg.find(f"{SVG}desc").text == "Succeeded and failed backups."
    days = svg.findall(f".//{SVG}g[@class='day']")
    assert len(days) == 3
    bars = svg.findall(f".//{SVG}rect")
    bars = [b for b in bars if "bar" in b.get("class").split()]
    # One rectangle per non-zero value, each as tall as its value on one scale.
    assert [float(b.get("data-value")) for b in bars] == [4, 1, 10, 2]
    ratios = {round(float(b.get("height")) / float(b.get("data-value")), 6) for b in bars}
    assert len(ratios) == 1
    # Stacked: the failed segment of the first day sits on its succeeded one.
    first_ok, first_failed = bars[0], bars[1]
    assert abs(float(first_failed.get("y")) + float(first_failed.get("height")) - float(first_ok.get("y"))) < 0.01
    assert "s-failed" in first_failed.get("class").split()
    # No style attribute anywhere: the site's CSP refuses them.
    assert not [e for e in svg.iter() if e.get("style")]
    # A legend and axis labels in words and numbers.
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "Succeeded" in texts and "Failed" in texts and "12-05" in texts and "10" in texts
    # The same figures as a table, for those who do not see the picture.
    html = str(chart)
    assert "<details" in html and '<th scope="row">12-06</th><td>10</td><td>0</td><td>10</td>' in html


def test_it_says_no_data_when_every_value_is_zero_or_missing():
    for chart in (
        stacked_bars(labels=["a", "b"], series=[Series("x", "X", [0, 0])], title="Nothing"),
        stacked_bars(labels=[], series=[], title="Nothing"),
        line_chart(labels=["a", "b"], series=Series("used", "Used", [None, None]), title="Nothing"),
    ):
        svg = _parse(chart)
        assert [t.text for t in svg.iter(f"{SVG}text")] == ["No data"]
        assert "No data" in svg.find(f"{SVG}desc").text
        assert svg.find(f".//{SVG}rect") is None and "<table" not in str(chart)


def test_it_draws_bytes_over_time_with_iec_units_on_its_axis():
    gib = 2**30
    chart = line_chart(
        labels=["d1", "d2", "d3", "d4"],
        series=Series("used", "Used by backups", [gib, 2 * gib, None, 3.5 * gib]),
        title="nas: used by backups",
    )
    svg = _parse(chart)
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "4.0 GiB" in texts and "0 bytes" in texts and "Used by backups" in texts
    dots = svg.findall(f".//{SVG}circle")
    assert [float(d.get("data-value")) for d in dots] == [gib, 2 * gib, 3.5 * gib]
    # Heights above the axis proportional to the values; the unknown day breaks the line in two.
    y0, y1 = float(dots[0].get("cy")), float(dots[1].get("cy"))
    base = 2 * y0 - y1  # 1 GiB is as far above the axis as 2 GiB is above 1 GiB
    assert abs((base - float(dots[2].get("cy"))) / (base - float(dots[0].get("cy"))) - 3.5) < 0.01
    assert len(svg.findall(f".//{SVG}polyline")) == 2
    assert "<td>3.5 GiB</td>" in str(chart) and "<td>—</td>" in str(chart)


def test_it_escapes_what_it_is_given():
    chart = stacked_bars(labels=["<b>"], series=[Series("x", "a & <i>", [1])], title="<script>x</script>")
    svg = _parse(chart)  # would not parse if a tag came through
    assert svg.find(f"{SVG}title").text == "<script>x</script>"
    assert "<script>" not in str(chart)


def test_it_picks_round_ticks():
    assert nice_ticks(3) == [0, 1, 2, 3]
    assert nice_ticks(1) == [0, 1]
    assert nice_ticks(37) == [0, 10, 20, 30, 40]
    assert nice_ticks(9) == [0, 5, 10]  # counts: no gridline at 2.5 labelled 2 (8 succeeded + 1 failed a day)
    assert nice_ticks(90) == [0, 25, 50, 75, 100]
    assert nice_ticks(9 * 2**30, base=1024) == [0, 2.5 * 2**30, 5 * 2**30, 7.5 * 2**30, 10 * 2**30]  # 2.5 GiB
    assert nice_ticks(3.2 * 2**30, base=1024) == [0, 2**30, 2 * 2**30, 3 * 2**30, 4 * 2**30]
    assert count(1234) == "1,234"


def test_it_renders_unescaped_in_a_django_template():
    from django.template import Context, Template

    chart = stacked_bars(labels=["a"], series=[Series("x", "X", [1])], title="T & U")
    html = Template("{{ chart }}").render(Context({"chart": chart}))
    assert html.startswith('<figure class="chart chart-bars"><svg ') and "T &amp; U" in html


def test_it_draws_one_series_of_bytes_per_hour_with_columns_of_the_pages_own():
    mib = 2**20
    chart = stacked_bars(
        labels=["12-06", "12-07"],
        full_labels=["#7, 2026-12-06 01:30", "#9, 2026-12-07 01:30"],
        series=[Series("change-rate", "Change rate", [mib, 2.5 * mib])],
        fmt=lambda v: f"{iec(v)}/h",
        base=1024,
        more=[Column("Changed", ["24.0 MiB", "60.0 MiB"]), Column("Since the one before", ["1 d", "1 d"])],
        title="Change rate per backup",
    )
    svg = _parse(chart)
    ticks = [t.text for t in svg.find(f".//{SVG}g[@class='y-axis']").iter(f"{SVG}text")]
    # Round steps of the unit on an IEC axis (base 10 would step by 1,000,000 bytes: 976.6 KiB/h).
    assert ticks == ["0 bytes/h", "1.0 MiB/h", "2.0 MiB/h", "3.0 MiB/h"]
    # Longer labels than a count's or a size's: the plot starts further right, so they are not cut.
    axis = svg.find(f".//{SVG}g[@class='y-axis']")
    assert float(axis.find(f"{SVG}text").get("x")) > 84 and float(axis.find(f"{SVG}line").get("x1")) > 90
    bar = svg.find(f".//{SVG}rect[@data-value='{int(2.5 * mib)}']")
    assert bar.find(f"{SVG}title").text == "#9, 2026-12-07 01:30: 2.5 MiB/h change rate"
    # One series: no Total column (it would repeat the value); the page's columns after the series'.
    assert chart.headers == ["", "Change rate", "Changed", "Since the one before"]
    assert chart.rows[1] == ["#9, 2026-12-07 01:30", "2.5 MiB/h", "60.0 MiB", "1 d"]
    assert "<td>2.5 MiB/h</td><td>60.0 MiB</td><td>1 d</td></tr>" in str(chart)


def test_it_adds_a_pages_columns_to_a_lines_table():
    gib = 2**30
    chart = line_chart(
        labels=["12-06", "12-07"],
        series=Series("stored", "Stored in all", [4 * gib, 5 * gib]),
        more=[Column("This backup", ["4.0 GiB", "1.0 GiB"])],
        title="Storage",
    )
    # The last point's label ends at it rather than being cut at the right edge.
    last = _parse(chart).find(f".//{SVG}g[@class='x-axis']")[-1]
    assert last.text == "12-07" and last.get("text-anchor") == "end"
    assert chart.headers == ["", "Stored in all", "This backup"]
    assert chart.rows == [["12-06", "4.0 GiB", "4.0 GiB"], ["12-07", "5.0 GiB", "1.0 GiB"]]
