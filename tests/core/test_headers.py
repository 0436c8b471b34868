"""Every answer carries the Content-Security-Policy (pages, the Django admin, Swagger UI, the API);
/favicon.ico answers."""

import re

from django.urls import reverse

from core import roles


def test_it_sends_the_content_security_policy_on_every_page(client, users, api_as, settings):
    policy = settings.CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert client.get(reverse("login"))["Content-Security-Policy"] == policy
    assert client.get(reverse("admin:login"))["Content-Security-Policy"] == policy
    client.force_login(users[roles.ADMIN])
    for name in ("dashboard", "settings", "token-list", "vm-list", "api:swagger-ui"):
        response = client.get(reverse(name))
        assert response.status_code == 200 and response["Content-Security-Policy"] == policy, name
    assert api_as(roles.VIEWER).get("/api/v1/")["Content-Security-Policy"] == policy


def test_it_serves_swagger_ui_without_inline_script_or_style(client, users):
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("api:swagger-ui")).content.decode()
    assert "<style" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
    script = client.get(reverse("api:swagger-ui"), {"script": ""})
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_it_answers_favicon_ico_with_the_sites_icon_to_anyone(client):
    """A browser asks /favicon.ico where no page names an icon (the API's JSON), monitoring tools always."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("/favicon.png")
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and b"".join(icon.streaming_content).startswith(b"\x89PNG")
