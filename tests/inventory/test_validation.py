"""A manager's URL and user are refused with a message that names the field."""

import pytest
from django.core.exceptions import ValidationError

from inventory.models import Manager


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
    with pytest.raises(ValidationError) as info:
        manager.full_clean()
    assert message in str(info.value.message_dict["api_url"])


@pytest.mark.parametrize("username", ["admin", "admin@", "@internal", "ad min@internal"])
def test_it_refuses_a_username_without_domain(db, username):
    manager = Manager(name="m", api_url="https://e.example/ovirt-engine/api", username=username)
    with pytest.raises(ValidationError) as info:
        manager.full_clean()
    assert "user@domain" in str(info.value.message_dict["username"])


@pytest.mark.parametrize(
    "url, username",
    [
        ("https://e.example/ovirt-engine/api", "admin@internal"),
        ("https://e.example:8443/ovirt-engine/api", "backup@corp.example.com"),
    ],
)
def test_it_accepts_a_good_manager(db, url, username):
    try:
        Manager(name="m", api_url=url, username=username).full_clean()
    except ValidationError as refused:
        pytest.fail(f"a good manager was refused: {refused.message_dict}")
