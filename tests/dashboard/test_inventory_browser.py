"""The inventory in a real browser, on a desktop and a phone: filtering by RPO status (htmx, the
filters kept in the address), "Back up selected" from ticked rows, a VM's page with its charts as
SVG, a host's page. Screenshots in SCREENSHOTS_DIR when set."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from core import roles
from jobs.models import Job
from repository.models import BackupPoint
from tests.browser import chromium_page
from tests.dashboard.test_browser import log_in
from tests.dashboard.test_inventory_pages import DAY, make_inventory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_it_backs_up_the_ticked_vms_and_draws_a_vms_charts(live_server, make_user, tmp_path):
    make_user(roles.OPERATOR, "otto")
    estate = make_inventory(tmp_path)
    web01, nas = estate["vms"]["web01"], estate["nas"]
    parent = BackupPoint.objects.filter(vm=web01).get()
    BackupPoint.objects.filter(pk=parent.pk).update(started=parent.started - 2 * DAY, bytes_stored=3 * 2**30)
    parent.refresh_from_db()
    for n in range(1, 3):
        parent = BackupPoint.objects.create(
            vm=web01,
            destination=nas,
            strategy="image_transfer",
            type="incremental",
            parent=parent,
            status="complete",
            started=parent.started + DAY,
            bytes_stored=n * 2**29,
            bytes_transferred=n * 2**29,
        )
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        log_in(page, live_server, "otto")
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{live_server.url}/inventory/")
            expect(page.locator("#vm-rows tr.vm")).to_have_count(4)
            page.get_by_label("RPO status").select_option("stale")
            expect(page.locator("#vm-rows tr.vm")).to_have_count(1)
            expect(page).to_have_url(re.compile(r"rpo=stale"))  # the filter is in the address
            page.get_by_label("RPO status").select_option("")
            expect(page.locator("#vm-rows tr.vm")).to_have_count(4)
            assert fits(page), f"/inventory/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"inventory-list-{size}.png", full_page=True)

            page.get_by_role("link", name="web01", exact=True).click()
            page.wait_for_url(f"**/inventory/vms/{web01.pk}/")
            expect(page.locator("figure.chart svg")).to_have_count(2)
            # A dot per kept backup at its running total (3, 3.5, 4.5 GiB), a bar per incremental's change rate.
            expect(page.locator("#storage svg circle.dot")).to_have_count(3)
            expect(page.locator("#storage svg circle.dot").last).to_have_attribute("data-value", str(9 * 2**29))
            expect(page.locator("#change-rate svg rect.bar")).to_have_count(2)
            expect(page.locator("#storage svg > title")).to_have_text("Storage used by web01's backups")
            expect(page.locator("#change-rate svg .y-axis text").last).to_contain_text("/h")
            assert page.locator("#storage svg").bounding_box()["width"] <= width
            # The figures under each chart, folded until asked for.
            figures = page.locator("#change-rate details.chart-figures")
            expect(figures.locator("table")).not_to_be_visible()
            figures.locator("summary").click()
            expect(figures.locator("tbody tr")).to_have_count(2)
            expect(figures.locator("tbody tr").last).to_contain_text("1.0 GiB")
            page.locator(".vm-charts").screenshot(path=shots / f"inventory-vm-charts-{size}.png")
            expect(page.locator("ol.chain li")).to_have_count(3)
            expect(page.locator("#next-run")).to_contain_text("by nightly-prod")
            assert fits(page), f"the VM page is wider than the {size}'s screen"
            page.screenshot(path=shots / f"inventory-vm-{size}.png", full_page=True)

            page.get_by_role("link", name="host1").click()
            page.wait_for_url(f"**/inventory/hosts/{estate['host'].pk}/")
            expect(page.locator("#host-ssh")).to_contain_text("root@10.0.0.5:22")
            expect(page.locator("table.host-vms tr.vm")).to_have_count(4)
            assert fits(page), f"the host page is wider than the {size}'s screen"
            page.screenshot(path=shots / f"inventory-host-{size}.png", full_page=True)

        # Bulk: tick two rows, back them up to their policy's destination; the list says so, each job a link.
        page.goto(f"{live_server.url}/inventory/?q=web")
        page.get_by_label("Select web01").check()
        page.get_by_label("Select web02").check()
        page.get_by_role("button", name="Back up selected").click()
        expect(page.locator(".flash.success")).to_have_text(re.compile(r"^Queued 2 backups: web01 \(job \d+\), web02"))
        expect(page.locator(".flash.success a")).to_have_count(2)
        assert "q=web" in page.url
        page.screenshot(path=shots / f"inventory-bulk-{size}.png", full_page=True)
        # db01, which no policy covers: refused until a destination is chosen, then queued there.
        page.goto(f"{live_server.url}/inventory/?rpo=uncovered")
        page.get_by_label("Select db01").check()
        page.get_by_role("button", name="Back up selected").click()
        expect(page.locator(".flash.error")).to_contain_text("db01 (no enabled policy covers it: choose a Destination")
        page.get_by_label("Select db01").check()
        page.get_by_label("Destination").select_option("nas")
        assert fits(page), f"/inventory/ with a destination chosen is wider than the {size}'s screen"
        page.get_by_role("button", name="Back up selected").click()
        expect(page.locator(".flash.success")).to_contain_text("Queued 1 backup to nas: db01 (job ")
        page.screenshot(path=shots / f"inventory-bulk-destination-{size}.png", full_page=True)
        page.locator(".flash.success").get_by_role("link").click()  # the job's page, to follow it
        page.wait_for_url(re.compile(r"/jobs/\d+/$"))
        expect(page.locator("h1")).to_contain_text("db01")
    queued = Job.objects.filter(kind="backup").exclude(status__in=["succeeded", "failed"])
    assert sorted(queued.values_list("name", flat=True)) == ["db01", "web01", "web02"]
    assert {job.owner.username for job in queued} == {"otto"}
    assert queued.get(name="db01").params["destination"] == nas.pk
