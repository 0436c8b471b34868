"""Bad input is refused with a message that names the field."""

import os

import pytest
from django.urls import reverse

from core import roles
from inventory.models import Manager
from policies.models import Policy
from repository.models import BackupDestination


def error_fields(response) -> dict:
    body = response.json()["error"]
    assert body["status"] == 400
    return body["fields"]


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://engine.example/ovirt-engine/api", "must start with https://"),
        ("https://engine.example/", "must end in /ovirt-engine/api"),
        ("https://engine.example/ovirt-engine/api/vms", "must end in /ovirt-engine/api"),
        ("engine.example", "must start with https://"),
    ],
)
def test_it_refuses_a_bad_engine_url(db, url, message):
    manager = Manager(name="m", api_url=url, username="admin@internal")
    with pytest.raises(Exception) as info:
        manager.full_clean()
    assert message in str(info.value.message_dict["api_url"])


@pytest.mark.parametrize("username", ["admin", "admin@", "@internal", "ad min@internal"])
def test_it_refuses_a_username_without_domain(db, username):
    manager = Manager(name="m", api_url="https://e.example/ovirt-engine/api", username=username)
    with pytest.raises(Exception) as info:
        manager.full_clean()
    assert "user@domain" in str(info.value.message_dict["username"])


def test_it_accepts_a_good_manager(db):
    Manager(name="m", api_url="https://e.example/ovirt-engine/api", username="admin@internal").full_clean()


@pytest.fixture
def destination(db, destination_dir):
    return BackupDestination.objects.create(name="local", path=str(destination_dir))


@pytest.mark.parametrize("schedule", ["every night", "61 * * * *", "* * * *", "0 2 * * * *"])
def test_it_refuses_a_cron_that_does_not_parse(api_as, destination, schedule):
    response = api_as(roles.OPERATOR).post(
        reverse("api:policy-list"),
        {"name": "nightly", "destination": destination.pk, "schedule": schedule},
        format="json",
    )
    assert response.status_code == 400
    fields = error_fields(response)
    assert "is not a cron schedule" in fields["schedule"][0]
    assert response.json()["error"]["message"].startswith("schedule:")
    assert not Policy.objects.exists()


def test_it_creates_a_policy_and_reports_its_next_run(api_as, destination):
    response = api_as(roles.OPERATOR).post(
        reverse("api:policy-list"),
        {"name": "nightly", "destination": destination.pk, "schedule": "30 2 * * *", "excluded_disks": ["swap"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert "T02:30:00" in response.json()["next_run"]


def test_it_refuses_a_bad_regex_and_bad_exclusions(api_as, destination):
    response = api_as(roles.OPERATOR).post(
        reverse("api:policy-list"),
        {"name": "p", "destination": destination.pk, "match_name_regex": "web(", "excluded_disks": "swap"},
        format="json",
    )
    fields = error_fields(response)
    assert "regular expression" in fields["match_name_regex"][0]
    assert "list" in fields["excluded_disks"][0]


def test_it_refuses_a_destination_that_is_not_writable(api_as, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    cases = {
        "relative/path": "must be absolute",
        str(tmp_path / "missing" / "deeper"): "does not exist",
        "/proc/version": "is not a directory",
    }
    if os.geteuid() != 0:  # root writes anywhere; use a read-only mount point instead
        cases[str(readonly)] = "not writable"
    else:
        cases["/proc/sys"] = "not writable"
    for path, message in cases.items():
        response = api_as(roles.ADMIN).post(
            reverse("api:destination-list"), {"name": "d", "kind": "filesystem", "path": path}, format="json"
        )
        assert response.status_code == 400, path
        assert message in error_fields(response)["path"][0], (path, response.json())
    assert not BackupDestination.objects.exists()


def test_it_creates_a_destination_and_reports_its_space(api_as, tmp_path):
    response = api_as(roles.ADMIN).post(
        reverse("api:destination-list"),
        {"name": "d", "kind": "filesystem", "path": str(tmp_path / "new")},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["capacity_bytes"] > 0 and 0 < body["free_bytes"] <= body["capacity_bytes"]
    assert (tmp_path / "new").is_dir()


def test_it_shows_form_errors_next_to_the_field(client, users, destination):
    client.force_login(users[roles.OPERATOR])
    response = client.post(reverse("policy-new"), {"name": "p", "destination": destination.pk, "schedule": "nope"})
    assert response.status_code == 200
    assert b'data-field="schedule"' in response.content
    assert b"is not a cron schedule" in response.content


def test_it_refuses_a_weak_password_for_a_new_user(api_as):
    response = api_as(roles.ADMIN).post(
        reverse("api:user-list"), {"username": "bob", "role": "viewer", "password": "123"}, format="json"
    )
    assert "password" in error_fields(response)


def test_it_lets_an_admin_manage_users(api_as, client):
    admin = api_as(roles.ADMIN)
    response = admin.post(
        reverse("api:user-list"), {"username": "bob", "role": "operator", "password": "correct-Horse-9"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["role"] == "operator"
    assert "password" not in response.json()
    pk = response.json()["id"]
    response = admin.patch(reverse("api:user-detail", kwargs={"pk": pk}), {"role": "viewer"}, format="json")
    assert response.json()["role"] == "viewer"
    assert client.login(username="bob", password="correct-Horse-9")
    assert admin.delete(reverse("api:user-detail", kwargs={"pk": pk})).status_code == 204
    assert not client.login(username="bob", password="correct-Horse-9")


def test_it_lets_an_admin_create_a_user_in_the_ui(client, users):
    client.force_login(users[roles.ADMIN])
    response = client.post(
        reverse("user-new"), {"username": "carol", "role": "viewer", "password": "correct-Horse-9", "is_active": "on"}
    )
    assert response.status_code == 302
    from django.contrib.auth import get_user_model

    assert roles.role_of(get_user_model().objects.get(username="carol")) == "viewer"
