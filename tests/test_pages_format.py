"""Every page (tests/pages.py), rendered as an admin over the sample site, says things the way the
formatting layer does (core/formats.py): no raw timedelta, no raw choice key where a label belongs,
one unit system for sizes, one date format; and no hidden input under a visible label."""

import re
from html.parser import HTMLParser

import pytest
from django.apps import apps
from django.db import transaction
from django.template.loader import render_to_string
from django.test import Client

from tests.conftest import PASSWORD
from tests.pages import build_sample, fill, page_labels, page_urls

RAW_TIMEDELTA = re.compile(r"\b\d+:\d\d:\d\d\.\d+|\d+ days?, \d+:\d\d")
DECIMAL_SIZE = re.compile(r"\b\d+(?:[.,]\d+)?[\s\xa0]?(?:kB|KB|MB|GB|TB|PB)\b")
IEC_SIZE = re.compile(r"\b\d+(?:\.\d+)?[\s\xa0]?(?:KiB|MiB|GiB|TiB|PiB)\b")
DJANGO_DATE = re.compile(
    r"\b(?:Jan|Feb|March|April|May|June|July|Aug|Sept|Oct|Nov|Dec)\.? \d{1,2}, \d{4}|\b\d{1,2}(?::\d\d)? [ap]\.m\."
)
TIMESINCE = re.compile(r"\b\d+\xa0(?:minute|hour|day|week|month|year)s?\b")
PYTHON_REPR = re.compile(r"\[\]|\['[^']*'|\{'[^']*':")  # a list or dict printed as Python writes it
# Each test in its own transaction (rolled back) inside the module's (the sample site, rolled back at the end).
pytestmark = pytest.mark.django_db
NOT_SHOWN_AS_TEXT = {"script", "style", "code", "pre", "kbd", "samp", "textarea"}


class Page(HTMLParser):
    """A page's visible texts: of each element, all the text it shows (a key alone in a <td> or a
    <span> is a raw key; "running" in <a><b>3</b> running</a> is a word); its labels and hidden inputs."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []  # each element's whole text, and each bare text node's
        self.label_for: set[str] = set()
        self.hidden_ids: set[str] = set()
        self.labelled_hidden: list[str] = []  # a hidden input inside a <label> with text
        self._open: list[list] = []  # [tag, text parts, hidden inputs inside (for a label)]
        self.feed(html)
        while self._open:
            self._close()

    def _close(self) -> None:
        tag, parts, hidden = self._open.pop()
        text = " ".join(" ".join(parts).split())
        if tag in NOT_SHOWN_AS_TEXT:
            return
        if text:
            self.texts.append(text)
        if tag == "label" and hidden and text:
            self.labelled_hidden += hidden
        if self._open:
            self._open[-1][1].append(text)
            self._open[-1][2] += hidden if tag != "label" else []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        if tag == "input" and (a.get("type") or "").lower() == "hidden":
            if a.get("id"):
                self.hidden_ids.add(a["id"])
            if self._open:
                self._open[-1][2].append(a.get("name", "?"))
        if tag not in self.VOID:
            self._open.append([tag, [], []])

    def handle_endtag(self, tag):
        if any(t == tag for t, _, _ in self._open):
            while self._open[-1][0] != tag:
                self._close()
            self._close()

    def handle_data(self, data):
        if self._open:
            self._open[-1][1].append(data)
        elif data.strip():
            self.texts.append(" ".join(data.split()))


def raw_keys() -> dict[str, str]:
    """Key -> its label, for every key people should see as its label: the models' choices, the
    registered labels (core.formats), the job kinds; a key spelled like its label is left out."""
    from core import formats
    from jobs.kinds import HANDLERS, kind_label

    keys: dict[str, str] = {}
    for model in apps.get_models():
        for field in model._meta.get_fields():
            for key, label in getattr(field, "flatchoices", None) or ():
                if isinstance(key, str) and key:
                    keys[key] = str(label)
    for labels in formats._labels.values():
        keys.update(labels)
    keys.update({kind: kind_label(kind) for kind in HANDLERS})
    return {key: label for key, label in keys.items() if key != label}


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker, tmp_path_factory):
    """The sample site for the whole module, rolled back at its end; an admin's client on it."""
    with django_db_blocker.unblock(), transaction.atomic():
        sample = build_sample(destination_path=tmp_path_factory.mktemp("pages-nas"), password=PASSWORD)
        client = Client()
        client.force_login(sample.admin)
        from core.models import AuditEvent

        actions = {a: a for a in AuditEvent.objects.values_list("action", flat=True)}
        yield sample, client, raw_keys() | {a: a.replace("_", " ") for a in actions}
        transaction.set_rollback(True)


def problems_of(html: str, keys: dict[str, str]) -> list[str]:
    page = Page(html)
    found = []
    text = "\n".join(page.texts)
    for pattern, what in (
        (RAW_TIMEDELTA, "a raw timedelta (use |duration)"),
        (DJANGO_DATE, "Django's default date format (use |when)"),
        (TIMESINCE, "timesince's output (use |ago)"),
        (PYTHON_REPR, "a Python list or dict (use |detail or join)"),
    ):
        found += [f"{what}: {m.group(0)!r}" for m in pattern.finditer(text)]
    decimal, iec = DECIMAL_SIZE.findall(text), IEC_SIZE.findall(text)
    if decimal:
        found.append(
            f"decimal size units (use |iec){' next to IEC ones ' + repr(iec[:3]) if iec else ''}: {decimal[:5]}"
        )
    found += [f"the raw key {t!r} (its label: {keys[t]!r})" for t in dict.fromkeys(page.texts) if t in keys]
    found += [f"a visible label for the hidden input #{i}" for i in sorted(page.label_for & page.hidden_ids)]
    found += [f"a visible label around the hidden input {n!r}" for n in page.labelled_hidden]
    return found


@pytest.mark.parametrize("label", page_labels(fragments=True))
def test_it_renders_the_page_in_the_formatting_layers_words(site, label):
    sample, client, keys = site
    url = fill(label, sample)
    response = client.get(url)
    assert response.status_code == 200, f"{label} ({url}) answered {response.status_code}"
    assert response["Content-Type"].startswith("text/html")
    assert problems_of(response.content.decode(), keys) == [], url


def test_it_fills_every_url_pattern_of_the_site(site):
    sample, _, _ = site
    urls = page_urls(sample)  # UnfilledPattern names any pattern it cannot fill
    assert "vm-detail" in urls and len(urls) > 30


def test_it_renders_the_error_pages_in_the_same_words(site):
    sample, client, keys = site
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404 and b"Not found" in missing.content
    assert problems_of(missing.content.decode(), keys) == []
    viewer = Client()
    viewer.force_login(sample.viewer)
    refused = viewer.get("/settings/")
    assert refused.status_code == 403 and b"Not allowed" in refused.content
    assert problems_of(render_to_string("500.html"), keys) == []


def test_it_finds_what_it_looks_for():
    """The checks above can fail: each finds its mistake in a page that makes it."""
    keys = {"image_transfer": "Disk image transfer", "policy_changed": "policy changed"}
    bad = (
        "<p>took 0:00:00.594566</p><td>image_transfer</td><td>policy_changed</td><p>1.5 GB of 3.0 GiB</p>"
        "<p>Dec. 7, 2026, 1:30 a.m.</p><p>3\xa0hours ago</p><td>Changed: ['schedule']</td>"
        '<label for="id_x">X</label><input type="hidden" id="id_x"><label>Y <input type="hidden" name="y"></label>'
    )
    assert len(problems_of(bad, keys)) == 9
    fine = (
        '<p>took 0.6 s</p><td>Disk image transfer</td><a href="/x?strategy=image_transfer">x</a>'
        "<code>image_transfer</code><p>1.5 GiB of 3.0 GiB</p><p>2026-12-07 01:30</p><td>Changed: schedule</td>"
        '<input type="hidden" name="next"><label for="id_y">Y</label><input id="id_y">'
    )
    assert problems_of(fine, keys) == []
