import pytest
from django.db import connection

from inventory.models import Host, Manager

PLAIN = "Engine-Pa55word!"


@pytest.fixture
def manager(db):
    return Manager.objects.create(
        name="engine", api_url="https://engine.example/ovirt-engine/api", username="admin@internal", password=PLAIN
    )


def raw_column(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_it_never_stores_the_engine_password_in_plain_text(manager):
    stored = raw_column("inventory_manager", "password", manager.pk)
    assert PLAIN not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert Manager.objects.get(pk=manager.pk).password == PLAIN


def test_it_encrypts_host_ssh_secrets(manager):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    host = Host.objects.create(
        manager=manager,
        engine_id="6d1c4a56-3f7e-4d4e-9a0a-0f6c7a1b2c3d",
        name="h1",
        address="10.0.0.1",
        ssh_private_key=key,
        ssh_password="root-pass",
    )
    assert "PRIVATE KEY" not in raw_column("inventory_host", "ssh_private_key", host.pk)
    assert "root-pass" not in raw_column("inventory_host", "ssh_password", host.pk)
    host = Host.objects.get(pk=host.pk)
    assert (host.ssh_private_key, host.ssh_password) == (key, "root-pass")


def test_it_keeps_an_empty_credential_empty(manager):
    manager.password = ""
    manager.save()
    assert raw_column("inventory_manager", "password", manager.pk) == ""


def test_it_says_clearly_when_the_key_is_wrong(manager, settings):
    from cryptography.fernet import Fernet

    settings.CREDENTIALS_KEY = Fernet.generate_key().decode()
    with pytest.raises(ValueError, match="cannot be decrypted"):
        Manager.objects.get(pk=manager.pk)
