import os

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backupsite import roles

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make
# around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PASSWORD = "a-Long-test-password-1"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The default hasher is slow on purpose; the suite creates hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db):
    def make(role: str | None, username: str | None = None):
        user = get_user_model().objects.create_user(username=username or f"{role or 'norole'}-user", password=PASSWORD)
        if role:
            roles.set_role(user, role)
        return user

    return make


@pytest.fixture
def users(make_user):
    return {role: make_user(role) for role in roles.ROLES} | {None: make_user(None)}


@pytest.fixture
def api_as(users):
    """An API client authenticated with a token of the user holding `role` (None: no role)."""

    def client_for(role):
        client = APIClient()
        if role != "anonymous":
            token, _ = Token.objects.get_or_create(user=users[role])
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return client_for


@pytest.fixture
def destination_dir(tmp_path):
    path = tmp_path / "backups"
    path.mkdir()
    return path
