"""A backup's page, its chain view and the backups list's filters in a real browser on a desktop and a
phone; and a single disk restored through the wizard against the simulated engine, its bytes
compared with the backup's. SCREENSHOTS_DIR=DIR keeps the screenshots."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from core import roles
from inventory.models import VM
from jobs.models import Job
from recovery.restore import RESTORE
from repository.models import BackupPoint
from tests.browser import chromium_page
from tests.dashboard.test_browser import log_in
from tests.helpers import backup
from tests.ovirtsim.helpers import download, identical
from tests.repository.point_pages_helpers import make_chain

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def shots_dir(tmp_path) -> Path:
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_it_filters_the_backups_and_shows_a_backup_and_its_chain(live_server, make_user, destination_dir, tmp_path):
    make_user(roles.OPERATOR, "otto")
    rows = make_chain(destination_dir)
    full, inc, damaged = rows["points"]
    shots = shots_dir(tmp_path)
    with chromium_page() as page:
        log_in(page, live_server, "otto")
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{live_server.url}/backups/")
            expect(page.locator("tr.point")).to_have_count(3)  # the failed attempt is a job, not a backup
            page.get_by_label("Status").select_option("damaged")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/backups/?*status=damaged*")
            expect(page.locator("tr.point")).to_have_count(1)
            expect(page.get_by_label("Status")).to_have_value("damaged")
            assert fits(page), f"/backups/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"backups-list-{size}.png", full_page=True)

            page.goto(f"{live_server.url}/backups/?vm=web01")
            page.get_by_role("link", name=f"Backup {inc.pk}", exact=True).click()
            page.wait_for_url(f"**/backups/{inc.pk}/")
            chain = page.locator("ol.chain > li")
            expect(chain).to_have_count(3)
            expect(chain.nth(1)).to_have_attribute("aria-current", "true")
            expect(chain.nth(0)).to_contain_text(f"Full {full.pk}")
            expect(chain.nth(2)).to_contain_text("Damaged: b.qcow2 does not match its checksum.")
            expect(page.locator("tr.point-disk")).to_have_count(2)
            expect(page.locator("#point-job")).to_have_attribute("href", f"/jobs/{inc.job_id}/")
            expect(page.locator("tr.history", has_text="Restore requested by otto")).to_have_count(1)
            for name in ("Restore the VM…", "Restore disks…", "Verify", "Delete…"):
                expect(page.locator("#point-actions").get_by_text(name, exact=True)).to_be_visible()
            # The chain reads left to right on a desktop, top to bottom on a phone.
            first, second = chain.nth(0).bounding_box(), chain.nth(1).bounding_box()
            if size == "desktop":
                assert second["x"] > first["x"] and abs(second["y"] - first["y"]) < 2
            else:
                assert second["y"] > first["y"] + first["height"]
            assert fits(page), f"the point page is wider than the {size}'s screen"
            page.screenshot(path=shots / f"point-detail-{size}.png", full_page=True)

            # The wizard: only the section that applies to the choice made shows.
            page.locator("#point-actions").get_by_text("Restore the VM…").click()
            page.wait_for_url(f"**/backups/{inc.pk}/restore/?what=vm")
            expect(page.locator("#section-vm-only")).to_be_visible()
            expect(page.locator("#section-disks-only")).to_be_hidden()
            page.get_by_label("Chosen disks only", exact=False).check()
            expect(page.locator("#section-vm-only")).to_be_hidden()
            expect(page.locator("#field-attach_to")).to_be_hidden()
            page.get_by_label("Attached to an existing VM").check()
            expect(page.get_by_label("VM to attach them to")).to_be_visible()
            expect(page.get_by_label("Storage domain")).to_contain_text("data1 (NFS, 500.0 GiB free)")
            assert fits(page), f"the restore wizard is wider than the {size}'s screen"
            page.screenshot(path=shots / f"restore-wizard-{size}.png", full_page=True)


def test_it_restores_one_disk_floating_through_the_wizard(
    live_server, make_user, manager, destination, demo_sim, tmp_path, settings
):
    make_user(roles.OPERATOR, "otto")
    # The job runs as it is queued, in the page's request: the page then shows it ended.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    vm = VM.objects.get(manager=manager, name="app01")
    made = backup(vm, destination, type="full")
    assert made.status == Job.Status.SUCCEEDED, made.error
    point = BackupPoint.objects.get(pk=made.result["point"])
    disk = point.disks.select_related("disk").get(disk__name="app01_disk2")
    shots = shots_dir(tmp_path)
    with chromium_page() as page:
        page.set_default_timeout(120_000)  # the restore runs in the confirming request
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server, "otto")
        page.goto(f"{live_server.url}/backups/{point.pk}/")
        page.locator(f"#disk-{disk.pk}").get_by_role("link", name="Restore this disk…").click()
        expect(page.get_by_label("Chosen disks only")).to_be_checked()
        expect(page.get_by_label("app01_disk2", exact=False)).to_be_checked()
        expect(page.get_by_label("Floating: attached to no VM")).to_be_checked()
        page.get_by_role("button", name="Next").click()
        expect(page.locator("#confirm-restore")).to_contain_text("floating: attached to no VM")
        expect(page.locator("#restore-path")).to_contain_text("Disks are written through the engine's image transfers")
        page.screenshot(path=shots / "restore-confirm-desktop.png", full_page=True)
        page.get_by_role("button", name="Confirm restore").click()
        page.wait_for_url("**/jobs/*/")
        expect(page.locator("main .status").first).to_have_text("Succeeded")
        page.screenshot(path=shots / "restore-job-desktop.png", full_page=True)
    job = Job.objects.filter(kind=RESTORE).latest("pk")
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.params["floating"] and job.params["disks"] == [str(disk.disk.engine_id)]
    ((original, new_id),) = job.result["disks"].items()
    assert original == str(disk.disk.engine_id)
    with demo_sim.connect() as conn:
        disks = conn.system_service().disks_service()
        restored = disks.disk_service(new_id).get()
        assert restored.vms is None  # floating
        out = tmp_path / "restored.raw"
        download(conn, demo_sim.ca_file, out, disk_id=new_id, fmt="raw", out_fmt="raw")
        assert identical(point.directory.path / f"{original}.qcow2", out)
        disks.disk_service(new_id).remove()
