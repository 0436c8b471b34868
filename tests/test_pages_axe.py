"""Every page (tests/pages.py) in Chromium at 1280x800 and at 390x844, over the sample site: axe-core
(vendored, static/vendor/axe-core-*.min.js) finds no serious or critical violation, and no page is
wider than the screen. A screenshot of each is kept under $SCREENSHOTS_DIR (else a temporary
directory) for people to look at; they are artifacts, not committed."""

import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.template.loader import render_to_string
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from tests.conftest import PASSWORD
from tests.pages import BrowserThread, build_sample, fill, page_labels, page_urls

# The page tests run in no transaction of their own: the sample is committed once for the module, and
# a test's transaction would hold SQLite's write lock (BEGIN IMMEDIATE) against the live server's writes.
# pytest-django sets up the test database only for the databases marked tests name, so the first test
# below carries the mark: without it, this module run alone would write to (and flush) the real database;
# the site fixture refuses any database that is not a test one.
pytestmark = [pytest.mark.browser]


@pytest.mark.django_db
def test_it_has_a_sample_for_every_page(site):
    sample = site[0]
    assert set(page_labels()) <= set(page_urls(sample, strict=False)) | {"login"}


@pytest.fixture(autouse=True)
def database_for_the_server(django_db_blocker):
    """The live server's thread reads and writes the committed sample: the database open, unwrapped."""
    with django_db_blocker.unblock():
        yield


(AXE,) = sorted(Path(settings.BASE_DIR, "static", "vendor").glob("axe-core-*.min.js"))
SIZES = {"wide": (1280, 800), "phone": (390, 844)}
SERIOUS = ("serious", "critical")


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker, tmp_path_factory):
    """The sample site, committed (the live server reads it from its own thread), and emptied at the end."""
    from django.db import connection

    name = str(connection.settings_dict["NAME"])
    # Committed rows and a flush at the end: never on a database that is not the test run's own.
    test_name = connection.settings_dict["TEST"].get("NAME")  # SQLite's here; PostgreSQL's: test_ + its name
    assert name == str(test_name) if test_name else name.startswith("test_"), (
        f"not the test database: {name}. pytest-django made none: a selection (-k) that leaves out "
        "test_it_has_a_sample_for_every_page leaves out its django_db mark; add `or sample_for_every_page` to it"
    )
    with django_db_blocker.unblock():
        sample = build_sample(destination_path=tmp_path_factory.mktemp("axe-nas"), password=PASSWORD)
        cookies = {}
        for who, user in (("admin", sample.admin), ("viewer", sample.viewer)):
            client = Client()
            client.force_login(user)
            cookies[who] = client.cookies[settings.SESSION_COOKIE_NAME].value
        server_error_page = render_to_string("500.html")
    server = LiveServer("localhost")
    server._live_server_modified_settings.enable()
    try:
        yield sample, server.url, cookies, server_error_page
    finally:
        server._live_server_modified_settings.disable()
        server.stop()
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def screens(site, tmp_path_factory):
    where = os.environ.get("SCREENSHOTS_DIR")
    path = Path(where) / "pages" if where else tmp_path_factory.mktemp("screens")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(site):
    """One Chromium; a tab per screen size and person (admin, viewer, nobody), logged in by cookie.
    The site's Content-Security-Policy stays in force: axe is evaluated through the DevTools
    protocol, which the policy does not govern, rather than added as a <script> it would refuse."""
    _, url, cookies, _ = site
    chromium = BrowserThread()
    source = AXE.read_text()

    def open_tabs(browser):
        tabs = {}
        for size, (width, height) in SIZES.items():
            for who in ("admin", "viewer", "nobody"):
                context = browser.new_context(viewport={"width": width, "height": height})
                if who in cookies:
                    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookies[who], "url": url}])
                tab = context.new_page()
                tab.set_default_timeout(20000)
                tabs[size, who] = tab
        return tabs

    tabs = chromium.call(open_tabs)
    yield chromium, tabs, source
    chromium.close()


def look_at(browser, tab, source: str, url: str, shot: Path, *, html: str = "") -> dict:
    """Open the page (or show `html` at `url`), run axe, measure, take the screenshot."""

    def visit(_):
        response = tab.goto(url)
        if html:
            tab.set_content(html)
        tab.evaluate(source)
        found = tab.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        widths = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        tab.screenshot(path=str(shot), full_page=True)
        return {"status": response.status if response else None, "violations": found["violations"], "widths": widths}

    return browser.call(visit)


def serious(violations: list[dict]) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(f"{' '.join(n['target'])} [{n['failureSummary'].splitlines()[-1].strip()}]" for n in v["nodes"][:4])
        for v in violations
        if v["impact"] in SERIOUS
    ]


def file_name(label: str, size: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) + f"-{SIZES[size][0]}.png"


def check(site, browser, screens, label: str, size: str, who: str, path: str, *, status: int = 200, html: str = ""):
    _, base, _, _ = site
    chromium, tabs, source = browser
    seen = look_at(chromium, tabs[size, who], source, base + path, screens / file_name(label, size), html=html)
    assert seen["status"] == status, f"{label} ({path}) answered {seen['status']}"
    assert serious(seen["violations"]) == [], f"{label} ({path}) at {SIZES[size][0]} px"
    width, screen = seen["widths"]
    assert width <= screen, f"{label} ({path}) is {width} px wide on a {screen} px screen"


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("label", page_labels())
def test_it_shows_every_page_accessibly_within_the_screen(site, browser, screens, label, size):
    path = fill(label, site[0])
    check(site, browser, screens, label, size, "nobody" if label == "login" else "admin", path)


@pytest.mark.parametrize("size", list(SIZES))
def test_it_shows_the_error_pages_accessibly_within_the_screen(site, browser, screens, size):
    check(site, browser, screens, "404", size, "admin", "/no/such/page/", status=404)
    check(site, browser, screens, "403", size, "viewer", "/settings/", status=403)
    # The 500 page as the server sends it when it fails, shown at a URL of the site (for its styles).
    check(site, browser, screens, "500", size, "nobody", "/login/", html=site[3])


def test_it_folds_the_menu_on_a_phone_and_opens_it_from_the_keyboard(site, browser):
    _, base, _, _ = site
    chromium, tabs, _ = browser
    tab = tabs["phone", "admin"]

    def use(_):
        tab.goto(base + "/")
        folded = (tab.is_visible("header.top .menu-toggle"), tab.is_visible("header.top nav"))
        tab.keyboard.press("Tab")
        first = tab.evaluate("document.activeElement.textContent.trim()")
        tab.keyboard.press("Tab")
        tab.keyboard.press("Tab")
        on_toggle = tab.evaluate("document.activeElement.className")
        tab.keyboard.press("Enter")
        opened = (tab.is_visible("header.top nav >> text=Backups"), tab.get_attribute(".menu-toggle", "aria-expanded"))
        tab.keyboard.press("Tab")
        into_menu = tab.evaluate("document.activeElement.textContent.trim()")
        tab.keyboard.press("Escape")
        closed = tab.is_visible("header.top nav")
        tab.set_viewport_size({"width": 1280, "height": 800})
        wide = (tab.is_visible("header.top .menu-toggle"), tab.is_visible("header.top nav >> text=Backups"))
        tab.set_viewport_size({"width": 390, "height": 844})
        return folded, first, on_toggle, opened, into_menu, closed, wide

    folded, first, on_toggle, opened, into_menu, closed, wide = chromium.call(use)
    assert folded == (True, False)
    assert first == "Skip to the content"  # the first Tab stop; then the brand, then the menu's button
    assert on_toggle == "menu-toggle"
    assert opened == (True, "true")
    assert into_menu == "Dashboard"
    assert closed is False
    assert wide == (False, True)  # on a wide screen the menu is always there, with no button
