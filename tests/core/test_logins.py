"""Failed logins lock the account and the address for a while (django-axes), on our login page and the admin's."""

import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

from core import roles
from tests.conftest import PASSWORD

LOCKED = "Too many failed logins for this account or from this address"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=10)


def log_in(client, username, password, url="login", **extra):
    return client.post(reverse(url), {"username": username, "password": password}, **extra)


def pass_the_cool_off():
    # Failures are counted from their time: moving them back is the cool-off passing.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=11))


def test_it_locks_an_account_after_failed_logins_saying_for_how_long(client, users, caplog):
    username = users[roles.OPERATOR].username
    for _ in range(2):
        response = log_in(client, username, "wrong")
        assert response.status_code == 200 and b"didn't match" in response.content
    with caplog.at_level(logging.WARNING):
        response = log_in(client, username, "wrong")
    assert response.status_code == 429
    assert f"{LOCKED}: logins are refused for 10 minutes" in response.content.decode()
    assert "Locking out" in caplog.text and username in caplog.text
    response = log_in(client, username, PASSWORD)
    assert response.status_code == 429 and LOCKED in response.content.decode()
    assert client.get(reverse("dashboard")).status_code == 302  # not logged in
    pass_the_cool_off()
    response = log_in(client, username, PASSWORD)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")


def test_it_locks_an_address_trying_many_user_names(client, users):
    for n in range(3):
        log_in(client, f"guess{n}", "wrong", REMOTE_ADDR="192.0.2.7")
    response = log_in(client, users[roles.VIEWER].username, PASSWORD, REMOTE_ADDR="192.0.2.7")
    assert response.status_code == 429 and LOCKED in response.content.decode()
    # The account itself is not locked: from elsewhere its owner logs in.
    assert log_in(client, users[roles.VIEWER].username, PASSWORD, REMOTE_ADDR="198.51.100.1").status_code == 302


def test_it_counts_failures_per_client_behind_a_proxy(client, users, settings):
    settings.BEHIND_PROXY = True
    for n in range(3):
        log_in(client, f"guess{n}", "wrong", HTTP_X_FORWARDED_FOR="10.0.0.1, 192.0.2.7")
    # Another client behind the same proxy is not locked out with the first.
    other = log_in(client, users[roles.VIEWER].username, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert other.status_code == 302
    spoofed = log_in(client, users[roles.VIEWER].username, PASSWORD, HTTP_X_FORWARDED_FOR="1.2.3.4, 192.0.2.7")
    assert spoofed.status_code == 429


def test_it_locks_the_django_admin_login_too(client, users):
    admin = users[roles.ADMIN]
    admin.is_staff = True
    admin.save()
    for _ in range(3):
        log_in(client, admin.username, "wrong", url="admin:login")
    response = log_in(client, admin.username, PASSWORD, url="admin:login")
    assert response.status_code == 429 and LOCKED in response.content.decode()
    pass_the_cool_off()
    assert log_in(client, admin.username, PASSWORD, url="admin:login").status_code == 302


def test_it_forgets_failures_after_a_successful_login(client, users):
    username = users[roles.VIEWER].username
    for _ in range(2):
        log_in(client, username, "wrong")
    assert log_in(client, username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        log_in(client, username, "wrong")
    assert log_in(client, username, PASSWORD).status_code == 302


def test_it_does_not_let_a_user_reset_the_count_against_another_account(client, users):
    """Failed guesses of the admin's password, each followed by a login of the attacker's own
    account from the same address: the admin's account still locks."""
    admin, own = users[roles.ADMIN].username, users[roles.VIEWER].username
    for _ in range(2):
        log_in(client, admin, "guess")
        assert log_in(client, own, PASSWORD).status_code == 302
        client.logout()
    log_in(client, admin, "guess")  # the third failure: with axes' own reset it was the first
    response = log_in(client, admin, PASSWORD)
    assert response.status_code == 429 and LOCKED in response.content.decode()
