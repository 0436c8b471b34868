"""The site's SSH key pair and each host's SSH credentials, against the simulator's real sshds."""

import io
import subprocess

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from core import roles
from core.models import AuditEvent, SiteSshKey
from core.ssh import load_private_key, site_key
from inventory.models import Host
from inventory.ssh import test_ssh
from inventory.sync import sync_manager
from ovirtsim import Simulator
from tests.conftest import register_manager
from tests.test_concurrent_api import run_clients


@pytest.fixture(scope="module")
def host_sim(tmp_path_factory):
    """An engine of its own: these tests switch host faults on and off."""
    with Simulator(tmp_path_factory.mktemp("hosts-engine"), seed="empty") as sim:
        yield sim


@pytest.fixture
def host(db, host_sim):
    for sshd in host_sim.hosts():
        host_sim.set_host_faults(sshd["name"], sshd_down=False, refuse_keys=False)
    manager = register_manager(host_sim, name="hosts")
    sync_manager(manager)
    return Host.objects.get(manager=manager, name="host1")


@pytest.mark.django_db(transaction=True)
def test_it_makes_the_site_key_once_under_concurrent_first_use():
    keys = []
    assert run_clients(6, lambda n: keys.append(site_key())) == []
    assert len(keys) == 6 and len(set(keys)) == 1 and SiteSshKey.objects.count() == 1
    [key] = set(keys)
    assert key.public_key.startswith("ssh-ed25519 ")
    loaded = load_private_key(key.private_key)
    assert f"{loaded.get_name()} {loaded.get_base64()}" == " ".join(key.public_key.split()[:2])
    with connection.cursor() as cursor:  # encrypted at rest
        cursor.execute("SELECT private_key FROM core_sitesshkey")
        assert "PRIVATE KEY" not in cursor.fetchone()[0]
    out = io.StringIO()
    call_command("ssh_public_key", stdout=out)
    assert out.getvalue().strip() == key.public_key


def test_it_shows_the_site_public_key_on_the_settings_page(client, users, host):
    client.force_login(users[roles.ADMIN])
    assert site_key().public_key in client.get(reverse("settings")).content.decode()
    page = client.get(reverse("host-edit", kwargs={"pk": host.pk})).content.decode()
    assert "it logs in with" in page and "the site key" in page


def test_it_logs_in_to_a_host_with_the_site_key_once_authorized(host, host_sim):
    assert (host.address, host.ssh_port) == (host_sim.host("host1")["address"], host_sim.host("host1")["port"])
    result = test_ssh(host)
    assert not result.ok and "refused" in result.message and "manage.py ssh_public_key" in result.message

    host_sim.authorize_key(site_key().public_key)
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert result.ok, result.message
    assert "root@" in result.message and "with the site key (host name host1)" in result.message
    assert Host.objects.get(pk=host.pk).ssh_host_key == host_sim.host("host1")["host_key"]


def test_it_says_what_went_wrong_with_a_host(host, host_sim):
    host_sim.authorize_key(site_key().public_key)
    assert test_ssh(host).ok

    host_sim.set_host_faults("host1", refuse_keys=True)
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert not result.ok and "authentication as root@" in result.message and "refused" in result.message
    host_sim.set_host_faults("host1", refuse_keys=False)

    host_sim.set_host_faults("host1", sshd_down=True)
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert not result.ok and "Cannot open SSH" in result.message and "refused" in result.message.lower()
    host_sim.set_host_faults("host1", sshd_down=False)

    before = host_sim.host("host1")["fingerprint"]
    host_sim.set_host_faults("host1", change_host_key=True)
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert not result.ok and "host key of" in result.message and "changed" in result.message
    assert before in result.message and host_sim.host("host1")["fingerprint"] in result.message


def test_it_sets_a_hosts_credentials_from_the_command_line(host, host_sim, tmp_path):
    key_file = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    host_sim.authorize_key(key_file.with_suffix(".pub").read_text())

    with pytest.raises(CommandError, match="No host named 'nope'. Hosts: host1"):
        call_command("host_credentials", "nope", "--user", "root")
    with pytest.raises(CommandError, match="Cannot read the private key file .*missing: No such file"):
        call_command("host_credentials", "host1", "--user", "root", "--private-key-file", str(tmp_path / "missing"))
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(CommandError, match="bad: The SSH private key is not"):
        call_command("host_credentials", "host1", "--user", "root", "--private-key-file", str(tmp_path / "bad"))
    with pytest.raises(CommandError, match="is not a user name"):
        call_command("host_credentials", "host1", "--user", "two words")
    assert Host.objects.get(pk=host.pk).ssh_private_key == ""  # nothing changed by a refused command

    out = io.StringIO()
    call_command("host_credentials", "host1", "--user", "root", "--private-key-file", str(key_file), stdout=out)
    assert out.getvalue().strip() == "host1: logs in as root with its own key."
    stored = Host.objects.get(pk=host.pk)
    assert stored.ssh_private_key == key_file.read_text()
    result = test_ssh(stored)
    assert result.ok and "with its own key" in result.message, result.message
    event = AuditEvent.objects.filter(action="host_changed").latest("pk")
    assert event.source == AuditEvent.Source.CLI and event.target_name == str(stored)
    assert event.details["fields"] == ["ssh_password", "ssh_private_key", "ssh_user"]

    call_command("host_credentials", "hosts/host1", "--user", "root", "--site-key", stdout=out)
    stored = Host.objects.get(pk=host.pk)
    assert stored.ssh_private_key == "" and "site key" in out.getvalue()
    assert not test_ssh(stored).ok  # the site key is not authorized on this engine's hosts yet


def test_it_lets_only_admins_change_host_credentials(api_as, host):
    url = reverse("api:host-detail", kwargs={"pk": host.pk})
    for role in (roles.VIEWER, roles.OPERATOR):
        assert api_as(role).patch(url, {"ssh_user": "backup"}, format="json").status_code == 403
        assert api_as(role).post(reverse("api:host-test-ssh", kwargs={"pk": host.pk})).status_code == 403
    assert api_as(roles.VIEWER).get(url).json()["uses_site_key"] is True
    response = api_as(roles.ADMIN).patch(url, {"ssh_user": "backup"}, format="json")
    assert response.status_code == 200 and response.json()["ssh_user"] == "backup"
    assert Host.objects.get(pk=host.pk).ssh_user == "backup"
