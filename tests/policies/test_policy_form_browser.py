"""The policy form in Chromium: the schedule's words and next runs follow what is typed (htmx), the
VM picker's search, and the pages at a desk's and a phone's size (screenshots kept as artifacts)."""

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from core import roles
from core.formats import when
from inventory.models import VM, Cluster, Manager
from policies.explain import next_runs
from policies.models import Policy
from repository.models import BackupPoint
from tests.browser import chromium_page
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SIZES = {"desk": (1280, 800), "phone": (390, 844)}


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def shots_dir(tmp_path) -> Path:
    found = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path) / "policies"
    found.mkdir(parents=True, exist_ok=True)
    return found


def test_it_previews_the_schedule_as_it_is_typed(live_server, make_user, destination, tmp_path):
    make_user(roles.OPERATOR, "otto")
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    prod = Cluster.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000c1", name="Prod")
    for n, name in enumerate(["web01", "web02", "db01", "app01"]):
        VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=name, cluster=prod)
    expected = [when(t) for t in next_runs("0 22 * * 1-5", 5)]
    shots = shots_dir(tmp_path)
    with chromium_page() as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server, "otto")
        page.goto(f"{live_server.url}/policies/new/")
        preview = page.locator("#schedule-preview")
        expect(preview).to_contain_text("At 01:00 every day")  # the default, before any typing
        schedule = page.get_by_label("Schedule", exact=True)
        schedule.fill("")
        schedule.press_sequentially("0 22 * * 1-5", delay=20)
        expect(preview).to_contain_text("At 22:00 on Monday to Friday")
        expect(preview.locator("time")).to_have_text(expected)
        # A bad expression: the parser's reason, in words, and no times.
        schedule.fill("")
        schedule.press_sequentially("0 25 * * *", delay=20)
        expect(preview.locator(".schedule-error")).to_contain_text("a value is out of its field's range")
        expect(preview.locator("time")).to_have_count(0)
        schedule.fill("")
        schedule.press_sequentially("0 */4 * * *", delay=20)
        expect(preview).to_contain_text("Every 4 hours at minute 0")
        # The VM picker: the search hides what does not match, never what is ticked.
        page.get_by_label("db01 (Prod)").check()
        page.get_by_label("Find a VM").fill("web")
        expect(page.locator(".vm-choice:visible")).to_have_count(3)
        expect(page.locator(".vm-count")).to_have_text("1 chosen; 3 of 4 shown")
        page.get_by_label("Find a VM").press("Enter")  # finds; does not submit
        assert page.url.endswith("/policies/new/")
        page.screenshot(path=str(shots / "policy-form-1280x800.png"), full_page=True)
        page.locator("#section-when").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "policy-form-when-1280x800.png"))
        page.get_by_label("Name", exact=True).fill("nightly-prod")
        page.get_by_label("Destination", exact=True).select_option(label="repo")
        page.click("button[type=submit]:has-text('Save')")
        page.wait_for_url(re.compile(r"/policies/\d+/$"))
        expect(page.locator("#schedule")).to_contain_text("Every 4 hours at minute 0")
        expect(page.locator("#next-runs time")).to_have_count(5)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/policies/new/")
        page.screenshot(path=str(shots / "policy-form-390x844.png"), full_page=True)
        page.locator("#section-when").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "policy-form-when-390x844.png"))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the form is {width} px wide on a phone"
    policy = Policy.objects.get(name="nightly-prod")
    assert policy.schedule == "0 */4 * * *" and list(policy.vms.values_list("name", flat=True)) == ["db01"]


def test_it_marks_the_runs_outside_the_backup_window_as_it_is_typed(live_server, make_user, destination):
    make_user(roles.OPERATOR, "otto")
    with chromium_page() as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server, "otto")
        page.goto(f"{live_server.url}/policies/new/")
        preview = page.locator("#schedule-preview")
        expect(preview).to_contain_text("At 01:00 every day")
        # The window's ends ask the schedule's preview again: 01:00 is outside 02:00 to 03:00.
        page.get_by_label("Backup window from").fill("02:00")
        page.get_by_label("Backup window until").fill("03:00")
        expect(preview.locator(".window-error")).to_contain_text(
            "The schedule runs at 01:00, outside the backup window (02:00 to 03:00)"
        )
        expect(preview.locator(".outside-window")).to_have_count(5)
        # The schedule asks with the window's ends: 02:30 is inside.
        schedule = page.get_by_label("Schedule", exact=True)
        schedule.fill("")
        schedule.press_sequentially("30 2 * * *", delay=20)
        expect(preview).to_contain_text("At 02:30 every day")
        expect(preview.locator(".window-error")).to_have_count(0)
        expect(preview.locator(".outside-window")).to_have_count(0)


def test_it_shows_the_policy_page_with_what_retention_keeps(live_server, make_user, destination, tmp_path):
    make_user(roles.VIEWER, "vera")
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    policy = Policy.objects.create(name="nightly-prod", destination=destination, schedule="30 1 * * *", keep_last=3)
    now = timezone.now()
    for n, name in enumerate(["web01", "db01"]):
        vm = VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=name)
        policy.vms.add(vm)
        for days in range(4 + n):
            BackupPoint.objects.create(
                vm=vm,
                destination=destination,
                policy=policy,
                strategy="image_transfer",
                status=BackupPoint.Status.COMPLETE,
                started=now - timedelta(days=days),
            )
    shots = shots_dir(tmp_path)
    with chromium_page() as page:
        log_in(page, live_server, "vera")
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{live_server.url}/policies/{policy.pk}/")
            expect(page.locator("#retention-summary")).to_contain_text(
                "Keeps 6 of 9 backups; would remove 3 (not one of the last 3)."
            )
            expect(page.locator("#schedule")).to_contain_text("At 01:30 every day")
            page.screenshot(path=str(shots / f"policy-page-{width}x{height}.png"), full_page=True)
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, f"the policy page is {scroll} px wide at {size}"
