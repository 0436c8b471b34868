"""The API tokens page: a user's own tokens, the new key shown once, a revoke button."""

import re

from django.urls import reverse
from rest_framework.test import APIClient

from core import roles
from core.tokens import issue_token


def test_it_shows_a_new_key_once_and_revokes_it_from_the_page(client, users):
    client.force_login(users[roles.VIEWER])
    response = client.post(reverse("token-list"), {"name": "laptop", "days": "10"})
    assert response.status_code == 200
    key = re.search(rb'<code class="key">([^<]+)</code>', response.content).group(1).decode()
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
    theirs.refresh_from_db()
    assert theirs.state == "active"
