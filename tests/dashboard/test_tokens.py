"""The API tokens page: a user's own tokens, the new key shown once, a revoke button."""

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect
from rest_framework.test import APIClient

from core import roles
from core.models import ApiToken
from core.tokens import issue_token
from tests.browser import chromium_page
from tests.dashboard.test_browser import log_in


def test_it_shows_a_new_key_once_and_revokes_it_from_the_page(client, users):
    client.force_login(users[roles.VIEWER])
    response = client.post(reverse("token-list"), {"name": "laptop", "days": "10"})
    assert response.status_code == 200
    key = re.search(rb'id="new-key-value" class="key" type="text" value="([^"]+)"', response.content).group(1).decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/").status_code == 200
    page = client.get(reverse("token-list"))
    assert b"laptop" in page.content and key.encode() not in page.content
    token = users[roles.VIEWER].api_tokens.get(name="laptop")
    response = client.post(reverse("token-list"), {"revoke": token.pk}, follow=True)
    assert f"Token {token.prefix} (laptop) revoked." in response.content.decode()
    assert api.get("/api/v1/").status_code == 401


def test_it_lists_and_revokes_only_the_users_own_tokens_on_the_page(client, users):
    theirs, _ = issue_token(user=users[roles.ADMIN], name="admin-script")
    client.force_login(users[roles.OPERATOR])
    assert b"admin-script" not in client.get(reverse("token-list")).content
    assert client.post(reverse("token-list"), {"revoke": theirs.pk}).status_code == 404
    assert client.post(reverse("token-list"), {"revoke": "x"}).status_code == 404
    assert client.post(reverse("token-list"), {"revoke": "²"}).status_code == 404  # a digit to isdigit(), not to int()
    theirs.refresh_from_db()
    assert theirs.state == "active"


def screenshots_dir(tmp_path) -> Path:
    where = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", css)[:3])


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_copies_a_new_key_and_shows_a_visible_revoke_button_in_chromium(live_server, make_user, tmp_path):
    user = make_user(roles.OPERATOR, "otto")
    old, _ = issue_token(user=user, name="old-cron", days=1)
    ApiToken.objects.filter(pk=old.pk).update(expires=timezone.now() - timedelta(hours=1))
    shots = screenshots_dir(tmp_path)
    with chromium_page() as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server, "otto")
        page.click("text=API tokens")
        page.wait_for_url("**/settings/tokens/")
        page.fill("input[name=name]", "backup-script")
        page.click("text=Create token")
        page.wait_for_load_state()
        key = page.input_value("#new-key-value")
        page.click("button.copy")
        expect(page.locator(".copy-state")).to_have_text("Copied.")
        copied = page.evaluate("navigator.clipboard.readText()")
        selected = page.evaluate(
            "(() => { const f = document.getElementById('new-key-value');"
            " return f.value.substring(f.selectionStart, f.selectionEnd); })()"
        )
        rows = page.locator("tr.token")
        expect(rows).to_have_count(2)
        new_row = rows.filter(has_text="backup-script")
        expect(new_row).to_contain_text("never")  # not used yet
        expect(rows.filter(has_text="old-cron")).to_contain_text("expired")
        revoke = new_row.locator("button.revoke")
        colour = revoke.evaluate("b => getComputedStyle(b).color")
        background = revoke.evaluate(
            "b => { let e = b; while (e && getComputedStyle(e).backgroundColor === 'rgba(0, 0, 0, 0)')"
            " e = e.parentElement; return e ? getComputedStyle(e).backgroundColor : 'rgb(255, 255, 255)'; }"
        )
        page.screenshot(path=str(shots / "tokens-1280.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(shots / "tokens-390.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.once("dialog", lambda dialog: dialog.accept())
        revoke.click()
        expect(page.locator(".flash")).to_contain_text("revoked")
        expect(rows.filter(has_text="backup-script")).to_contain_text("revoked")
    assert copied == key and key.startswith(user.api_tokens.get(name="backup-script").prefix)
    assert selected == key  # the fallback: the key is selected, for Ctrl+C
    assert rgb(colour) != rgb(background), (colour, background)
    assert sum(abs(a - b) for a, b in zip(rgb(colour), rgb(background), strict=True)) > 200
    assert width <= 390
    assert user.api_tokens.get(name="backup-script").state == "revoked"
