"""API tokens: kept hashed, shown once, expiring and revocable (trust issue, item 5)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core import roles
from core.models import ApiToken, hash_key
from core.tokens import issue_token


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def refused(response) -> str:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == "Token"
    return response.json()["error"]["message"]


def test_it_stores_only_a_hash_of_the_key(users):
    token, key = issue_token(user=users[roles.VIEWER], name="backup script")
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert key not in str(stored.values())
    assert stored["key_hash"] == hash_key(key) and key.startswith(stored["prefix"])
    assert client_with(key).get("/api/v1/").status_code == 200


def test_it_expires_tokens_after_api_token_days(users, settings):
    settings.API_TOKEN_DAYS = 30
    token, key = issue_token(user=users[roles.VIEWER], name="ci")
    assert token.expires - token.created == timedelta(days=30)
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert "This token expired on" in refused(client_with(key).get("/api/v1/"))


def test_it_refuses_a_revoked_token_saying_so(api_as, users):
    _, key = issue_token(user=users[roles.OPERATOR], name="cron")
    client = client_with(key)
    mine = client.get(reverse("api:token-list")).json()["results"]
    (listed,) = [t for t in mine if t["name"] == "cron"]
    assert client.delete(reverse("api:token-detail", kwargs={"pk": listed["id"]})).status_code == 204
    assert "This token was revoked on" in refused(client.get("/api/v1/"))
    assert "revoked" in refused(client.get("/api/v1/"))


def test_it_refuses_an_unknown_or_malformed_token(db):
    assert refused(client_with("0123abcd.not-a-key").get("/api/v1/")) == "Invalid token."
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token")
    assert "Authorization: Token <key>" in refused(client.get("/api/v1/"))


def test_it_revokes_the_tokens_of_a_deactivated_user(users):
    """Reactivating the account does not bring back keys that may have been handed on meanwhile."""
    user = users[roles.VIEWER]
    _, key = issue_token(user=user, name="x")
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert refused(client_with(key).get("/api/v1/")).startswith("This token was revoked on ")
    user.is_active = True
    user.save()
    assert refused(client_with(key).get("/api/v1/")).startswith("This token was revoked on ")


def test_it_refuses_a_token_of_a_user_deactivated_without_saving_through_the_model(users):
    user = users[roles.VIEWER]
    _, key = issue_token(user=user, name="x")
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # a bulk change sends no signal
    assert refused(client_with(key).get("/api/v1/")) == "This token's user is deactivated."


def test_it_answers_the_new_key_within_the_published_schema(api_as):
    schema = api_as(roles.VIEWER).get("/api/v1/schema/?format=json").json()
    created = schema["paths"]["/api/v1/tokens/"]["post"]["responses"]["201"]["content"]["application/json"]
    name = created["schema"]["$ref"].rsplit("/", 1)[1]
    assert "key" in schema["components"]["schemas"][name]["properties"]


def test_it_shows_the_key_once_when_a_user_creates_a_token(api_as):
    client = api_as(roles.VIEWER)
    response = client.post(reverse("api:token-list"), {"name": "laptop", "days": 7}, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["user"] == "viewer-user" and created["state"] == "active"
    assert client_with(created["key"]).get("/api/v1/").status_code == 200
    listed = client.get(reverse("api:token-list")).json()["results"]
    assert {t["name"] for t in listed} == {"tests", "laptop"}
    assert all("key" not in t and "key_hash" not in t for t in listed)
    too_long = client.post(reverse("api:token-list"), {"name": "x", "days": 100000}, format="json")
    assert too_long.status_code == 400 and "days" in too_long.json()["error"]["fields"]


def test_it_lets_users_see_and_revoke_only_their_own_tokens_and_admins_anyones(api_as, users):
    theirs, _ = issue_token(user=users[roles.OPERATOR], name="theirs")
    viewer = api_as(roles.VIEWER)
    assert "theirs" not in {t["name"] for t in viewer.get(reverse("api:token-list")).json()["results"]}
    url = reverse("api:token-detail", kwargs={"pk": theirs.pk})
    assert viewer.delete(url).status_code == 404
    admin = api_as(roles.ADMIN)
    everyone = admin.get(reverse("api:token-list"), {"user__username": users[roles.OPERATOR].username})
    assert [t["name"] for t in everyone.json()["results"]] == ["theirs"]
    assert admin.delete(url).status_code == 204
    theirs.refresh_from_db()
    assert theirs.state == "revoked"


def test_it_records_when_a_token_was_last_used(users):
    token, key = issue_token(user=users[roles.VIEWER], name="x")
    assert token.last_used is None
    client_with(key).get("/api/v1/")
    token.refresh_from_db()
    assert token.last_used is not None


def test_it_creates_and_revokes_tokens_on_the_command_line(users):
    out, err = StringIO(), StringIO()
    operator = users[roles.OPERATOR].username
    call_command("create_token", operator, "--name", "nightly", "--days", "5", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert "shown this once" in err.getvalue()
    assert client_with(key).get("/api/v1/").status_code == 200
    token = ApiToken.objects.get(name="nightly")
    assert token.expires - token.created == timedelta(days=5)
    out = StringIO()
    call_command("revoke_token", token.prefix, stdout=out)
    assert f"Revoked token {token.prefix} (nightly)" in out.getvalue()
    assert "revoked" in refused(client_with(key).get("/api/v1/"))
    with pytest.raises(CommandError, match="No active user 'nobody'"):
        call_command("create_token", "nobody")
    with pytest.raises(CommandError, match="1 to 3650 days"):
        call_command("create_token", operator, "--days", "0")
    with pytest.raises(CommandError, match="No token with the prefix"):
        call_command("revoke_token", "ffffffff")


@pytest.mark.django_db(transaction=True)  # SQLite's schema editor cannot run inside the test's transaction
def test_it_adopts_drf_tokens_as_hashes_and_drops_their_clear_text_table(users):
    from importlib import import_module

    from django.apps import apps
    from django.db import connection

    adopt = import_module("core.migrations.0003_adopt_drf_tokens").adopt_drf_tokens
    old_key = "0f" * 20  # DRF's keys were 40 hex digits
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created timestamp)")
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, users[roles.VIEWER].pk, timezone.now()]
        )
    with connection.schema_editor() as editor:
        adopt(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    adopted = ApiToken.objects.get(user=users[roles.VIEWER])
    assert adopted.key_hash == hash_key(old_key) and adopted.expires is not None
    assert client_with(old_key).get("/api/v1/").status_code == 200
