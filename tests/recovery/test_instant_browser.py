"""Instant restore's pages in a real browser, on a desktop and on a phone: the list with its actions,
one's page, the "Instant restore…" form opened from the backups list, the VM's page. Nothing is submitted (the
engine side has tests of its own); the pages must fit a phone's width without the page scrolling
sideways (a wide table scrolls within itself). INSTANT_SCREENSHOTS=DIR keeps the screenshots."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from core import roles
from recovery.models import InstantRestore
from tests.browser import chromium_page, follow_menu
from tests.dashboard.test_browser import log_in
from tests.recovery.instant_helpers import job_of, make_estate, make_instant

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
Status = InstantRestore.Status
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_it_shows_instant_restores_and_the_instant_form_on_a_desktop_and_a_phone(
    live_server, make_user, destination_dir, tmp_path
):
    make_user(roles.OPERATOR, "otto")
    estate = make_estate(destination_dir)
    point = estate["point"]
    rows = {status: make_instant(point, status) for status in Status.values}
    make_instant(point, Status.DISCARDED, name="proof-web00-1", purpose="proof", proof_ok=True, proof_answer="up")
    running = rows[Status.RUNNING]
    job_of(running)
    shots = Path(os.environ.get("INSTANT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        log_in(page, live_server, "otto")
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{live_server.url}/")
            follow_menu(page, "Instant")
            page.wait_for_url("**/instant/")
            expect(page.locator("tr.instant-restore")).to_have_count(len(Status.values) + 1)
            row = page.locator(f"#instant-{running.pk}")
            expect(row.locator("select[name=storage_domain] option")).to_have_text(["data1", "data2"])
            expect(row.get_by_role("button", name="Migrate")).to_be_visible()
            expect(row.get_by_role("button", name="Discard")).to_be_visible()
            assert fits(page), f"/instant/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"instant-list-{size}.png", full_page=True)

            row.get_by_role("link", name="web00-running").click()
            page.wait_for_url(f"**/instant/{running.pk}/")
            expect(page.locator("#instant-status")).to_have_text("Running from backup")
            expect(page.locator("tr.instant-disk")).to_have_count(1)
            expect(page.locator("#instant-actions").get_by_role("button", name="Migrate")).to_be_visible()
            assert fits(page), f"/instant/{running.pk}/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"instant-detail-{size}.png", full_page=True)

            page.goto(f"{live_server.url}/backups/")
            page.locator(f"#point-{point.pk}").get_by_role("link", name="Instant restore…").click()
            page.wait_for_url(f"**/backups/{point.pk}/instant/")
            expect(page.locator("#id_name")).to_have_value("web00-instant")
            expect(page.locator("#id_cluster option")).to_have_count(2)
            page.select_option("#id_migrate_to", "data2")
            expect(page.get_by_role("button", name="Boot from the backup")).to_be_visible()
            expect(page.get_by_role("button", name="Prove it boots")).to_be_visible()
            assert fits(page), f"the instant restore form is wider than the {size}'s screen"
            page.screenshot(path=shots / f"instant-form-{size}.png", full_page=True)

            # The VM's page: its last restore proof, its instant restores.
            page.goto(f"{live_server.url}/inventory/vms/{estate['vm'].pk}/")
            expect(page.locator("#restore-proof")).to_contain_text("Booted from backup #")
            expect(page.locator("table.instant-restores tr.instant-restore")).to_have_count(len(Status.values) + 1)
            assert fits(page), f"the VM page is wider than the {size}'s screen"
            page.screenshot(path=shots / f"instant-vm-{size}.png", full_page=True)
    assert InstantRestore.objects.count() == len(Status.values) + 1  # nothing was submitted
