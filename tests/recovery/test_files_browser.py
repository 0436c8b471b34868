"""File-level restore in a real browser: a backup's files opened from the backups list, a folder
opened, a file downloaded, the session closed."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from core import roles
from recovery.files.sessions import close_session
from recovery.models import FileSession
from tests.browser import chromium_page
from tests.dashboard.test_browser import log_in
from tests.recovery.files_helpers import DATA, nothing_left

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_opens_a_backups_files_goes_into_a_folder_and_downloads_a_file(
    live_server, make_user, app01_backup, files_dir
):
    make_user(roles.OPERATOR, "otto")
    try:
        with chromium_page() as page:
            log_in(page, live_server, "otto")
            page.goto(f"{live_server.url}/backups/")
            page.locator(f"form[action='/backups/{app01_backup.pk}/files/'] button").click()
            page.wait_for_url("**/files/*/")
            # The boot disk's filesystems: app01's root is the ext4 labelled app01.
            page.locator("tr.filesystem", has_text="app01").locator("a").click()
            page.get_by_role("link", name="data/").click()
            expect(page.locator("tr.entry")).to_have_count(4)
            expect(page.locator("#crumbs")).to_contain_text("data")
            with page.expect_download() as download:
                page.locator("tr.entry", has_text="file2.bin").get_by_role("link", name="Download").click()
            assert download.value.suggested_filename == "file2.bin"
            got = Path(download.value.path()).read_bytes()
            page.locator("#close-session").click()
            page.wait_for_url("**/backups/")
            expect(page.locator(".flash")).to_contain_text("closed: nothing of it stays on node")
    finally:
        for session in FileSession.objects.open():
            close_session(session, reason="test over")
    assert got == DATA["file2.bin"]
    assert not FileSession.objects.open().exists() and nothing_left(files_dir)
