"""The dashboard in Chromium: its charts are SVG with a bar per day, its answers' numbers, and its
links lead to lists that show the rows counted. Screenshots at 1280x800 and 390x844."""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from core import roles
from jobs.models import Job
from tests.browser import chromium_page
from tests.dashboard.sample import build_sample
from tests.dashboard.test_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _shots(tmp_path) -> Path:
    found = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    found.mkdir(parents=True, exist_ok=True)
    return found


def test_it_answers_the_morning_questions_with_charts_and_links(live_server, make_user, tmp_path):
    make_user(roles.VIEWER, "vera")
    sample = build_sample(tmp_path, timezone.now())
    nightly = sample["nightly"].pk
    shots = _shots(tmp_path)
    # A bar segment per day and status (the jobs 5 h and 20 h ago share a day, or not, by the hour).
    week_start = timezone.localdate() - timedelta(days=6)
    segments = {
        (timezone.localdate(j.created), j.status)
        for j in Job.objects.filter(kind="backup")
        if timezone.localdate(j.created) >= week_start
    }
    with chromium_page() as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server, "vera")
        # Protection: 2 within the RPO, 1 stale, 1 failing, 1 not covered, of 5 VMs.
        assert page.text_content("#count-vms") == "5"
        for status, n in {"ok": "2", "stale": "1", "failing": "1", "uncovered": "1"}.items():
            assert page.text_content(f"#rpo-{status} b") == n
        # Charts: SVG images with a group per day, the 7-day one with bars on 2 days.
        week = page.locator("#jobs-7d svg")
        expect(week).to_have_attribute("role", "img")
        expect(page.locator("#jobs-7d svg g.day")).to_have_count(7)
        expect(page.locator("#jobs-30d svg g.day")).to_have_count(30)
        expect(page.locator("#jobs-7d svg rect.bar")).to_have_count(len(segments))
        expect(page.locator(f"#destination-{sample['nas'].pk} svg circle.dot")).to_have_count(30)
        expect(page.locator(f"#destination-{sample['nas'].pk} .full-in")).to_have_text("353 days at this rate")
        expect(page.locator(f"#destination-{sample['tape'].pk} .full-in")).to_have_text("never at this rate")
        expect(page.locator(f"#day-policy-{nightly} a.summary")).to_have_text("nightly-prod: 2 of 4 VMs OK")
        expect(page.locator(f"#day-policy-{nightly} ul.failures")).to_contain_text(
            "db01: Snapshot failed: storage domain sd1 is full"
        )
        # The figures without the picture: the table in its <details>.
        page.locator("#jobs-7d details summary").click()
        expect(page.locator("#jobs-7d details table tbody tr")).to_have_count(7)
        page.screenshot(path=str(shots / "dashboard-1280x800.png"), full_page=True)
        page.locator("#storage").screenshot(path=str(shots / "dashboard-storage-1280.png"))

        # The failing card opens the inventory filtered to db01.
        page.click("#rpo-failing")
        page.wait_for_url("**/inventory/?rpo=failing")
        expect(page.locator("#vm-rows tr")).to_have_count(1)
        expect(page.locator("#vm-rows")).to_contain_text("db01")

        # The failed count of last night opens the jobs list with that one job.
        page.goto(f"{live_server.url}/")
        page.click(f"#day-policy-{nightly} a.bad")
        page.wait_for_url("**/jobs/?status=failed&kind=backup&since=24h&policy=*")
        expect(page.locator("table tbody tr")).to_have_count(1)
        expect(page.locator("table tbody tr")).to_contain_text("db01")

        # The damaged count opens the backups list with the damaged backup only.
        page.goto(f"{live_server.url}/")
        page.click("#damaged-link")
        page.wait_for_url("**/backups/?status=damaged")
        expect(page.locator("table tbody tr .status.damaged")).to_have_count(1)

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/")
        page.screenshot(path=str(shots / "dashboard-390x844.png"), full_page=True)
        page.locator("#jobs-chart").screenshot(path=str(shots / "dashboard-jobs-chart-390.png"))
        # Nothing of the dashboard's own is wider than the phone's screen.
        widths = [box["width"] for box in (s.bounding_box() for s in page.locator("section.answer").all()) if box]
        assert widths and max(widths) <= 390, widths
