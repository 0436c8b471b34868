"""The alerts pages in real Chromium at 1280x800 and 390x844: the raised change-rate alert with its
figures and links, the kind filter, and "Send a test" on each channel with its result in words (a
real SMTP server answers the e-mail; nothing listens at the webhook's port). No page is wider than
the screen. Screenshots go to SCREENSHOTS_DIR when set."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from alerts.models import AlertDelivery, AlertRule
from core import roles
from policies.models import Policy
from repository.models import BackupDestination
from tests.alerts.conftest import SECRET
from tests.alerts.history import GiB, finish_backup, make_history, make_vm
from tests.browser import chromium_page, follow_menu
from tests.conftest import free_port
from tests.dashboard.test_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def too_wide(page) -> list[str]:
    """The elements that reach past the screen's right edge (none when the page fits)."""
    return page.evaluate(
        """() => {
          if (document.documentElement.scrollWidth <= window.innerWidth) return [];
          const clipped = e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
            if (getComputedStyle(a).overflowX !== "visible") return true; return false; };
          const wide = [...document.querySelectorAll("body *")].filter(
            e => e.getBoundingClientRect().right > window.innerWidth + 1 && !clipped(e));
          return wide.length ? wide.map(e => e.tagName + "." + e.className + ": " + e.textContent.slice(0, 40))
                             : ["the page: " + document.documentElement.scrollWidth + " px"];
        }"""
    )


def test_it_shows_the_raised_alerts_and_sends_tests_from_the_alerts_page(
    live_server, make_user, destination_dir, smtp_sink, settings, tmp_path
):
    make_user(roles.ADMIN, "ada")
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    settings.ALERT_WEBHOOK_ALLOW = ["127.0.0.1"]
    destination = BackupDestination.objects.create(name="local", path=str(destination_dir))
    policy = Policy.objects.create(name="nightly-prod", destination=destination)
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com")
    history = make_history(make_vm("app01"), policy=policy, usual=5 * GiB)
    spike = finish_backup(history[-1], bytes_per_hour=48.2 * GiB)
    closed = free_port()
    AlertRule.objects.filter(pk=rule.pk).update(webhook_url=f"http://127.0.0.1:{closed}/hook", webhook_secret=SECRET)
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        log_in(page, live_server, "ada")
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{live_server.url}/")
            follow_menu(page, "Alerts")
            page.wait_for_url("**/alerts/")
            row = page.locator("tr.raised.change_rate")
            expect(row).to_have_count(1)
            expect(row).to_contain_text(
                f"app01 wrote 48.2\xa0GiB/h in the 6\xa0h before backup {spike.pk}, 9.6x its usual"
            )
            expect(row.locator("td.told")).to_have_text("E-mail sent")
            expect(row.get_by_role("link", name="app01")).to_be_visible()
            assert too_wide(page) == [], f"/alerts/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"alerts-raised-{size}.png", full_page=True)
            page.get_by_role("link", name="RPO missed").click()
            expect(page.locator("td.empty")).to_have_text("No alert of this kind.")

            page.get_by_role("link", name="Where they go").click()
            page.wait_for_url("**/alerts/channels/")
            page.get_by_role("button", name="Send a test e-mail for policy nightly-prod").click()
            expect(page.locator("p.flash.success")).to_have_text("Test e-mail to ops@example.com sent.")
            page.get_by_role("button", name="Send a test webhook call for policy nightly-prod").click()
            expect(page.locator("p.flash.error")).to_have_text(
                f"Test webhook to http://127.0.0.1:{closed}/hook failed: "
                f"The webhook receiver 127.0.0.1:{closed} refused the connection"
            )
            expect(page.locator("tr.delivery.failed").first).to_contain_text("refused the connection")
            assert too_wide(page) == [], f"/alerts/channels/ is wider than the {size}'s screen"
            page.screenshot(path=shots / f"alerts-channels-{size}.png", full_page=True)
    assert [m["subject"] for m in smtp_sink.messages[1:]] == [
        "[oVirt Backup] Test message of the alerts of policy nightly-prod"
    ] * 2
    assert AlertDelivery.objects.filter(test=True).count() == 4
