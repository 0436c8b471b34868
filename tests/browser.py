"""Headless Debian Chromium driven by Playwright; never a downloaded browser."""

import shutil
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page():
    """A page of a fresh headless Chromium. Query the database before or after the `with` block,
    not inside it: Playwright runs an event loop there, under which Django keeps its connections per
    asyncio context, so a query opens a connection of its own that nothing closes (PostgreSQL then
    refuses to drop the test database: "being accessed by other users")."""
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: run `make system-deps` (Debian package chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15000)
            yield page
        finally:
            browser.close()


def follow_menu(page, name: str) -> None:
    """Click the site menu's link `name`, unfolding the menu first where it is folded (a phone)."""
    toggle = page.locator("button.menu-toggle")
    if toggle.is_visible() and toggle.get_attribute("aria-expanded") != "true":
        toggle.click()
    page.get_by_role("link", name=name, exact=True).click()
