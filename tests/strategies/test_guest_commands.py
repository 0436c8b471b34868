"""A policy's pre/post snapshot commands, run in the guest over SSH (OpenSSH's sshd on 127.0.0.1
stands in for the guest)."""

import pytest
from django.urls import reverse

from core import roles
from core.ssh import fingerprint
from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from repository.models import BackupPoint
from tests.helpers import assert_clean_engine, backup


@pytest.fixture
def guest(manager, destination, sshd, tmp_path):
    """test01 reachable over SSH, covered by an always-full policy that runs commands in it."""
    vm = VM.objects.get(manager=manager, name="test01")
    vm.guest_address = "127.0.0.1"
    vm.save()
    policy = Policy.objects.create(
        name="with-commands",
        destination=destination,
        full_every_days=0,
        guest_ssh_user=sshd["user"],
        guest_ssh_port=sshd["port"],
        guest_ssh_private_key=sshd["key"],
        guest_command_timeout=20,
    )
    policy.vms.add(vm)
    return vm, policy, tmp_path / "guest.log"


def test_it_stops_before_the_snapshot_when_the_pre_command_fails(guest, destination, demo_sim):
    vm, policy, log = guest
    policy.pre_snapshot_command = "echo 'database is busy' >&2; exit 3"
    policy.post_snapshot_command = f"echo post >> {log}"
    policy.save()

    job = backup(vm, destination)
    assert job.status == Job.Status.FAILED
    assert job.error == "The pre-snapshot command exited with status 3: database is busy"
    assert not log.exists(), "the post command undoes the pre command, which did not succeed"
    assert not BackupPoint.objects.filter(vm=vm, status=BackupPoint.Status.COMPLETE).exists()
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), set())


def test_it_goes_on_with_a_warning_when_the_post_command_fails(guest, destination):
    vm, policy, _ = guest
    policy.post_snapshot_command = "exit 1"
    policy.save()

    job = backup(vm, destination)
    assert job.status == Job.Status.SUCCEEDED, job.error
    warning = job.events.get(level="warning", message__startswith="The post-snapshot command")
    assert warning.message == "The post-snapshot command exited with status 1. Check the guest: the backup goes on."


def test_it_says_why_a_guest_cannot_be_reached(guest, destination, sshd):
    vm, policy, _ = guest
    policy.pre_snapshot_command = "true"
    policy.save()
    VM.objects.filter(pk=vm.pk).update(guest_address="", fqdn="")
    job = backup(VM.objects.get(pk=vm.pk), destination)
    assert job.status == Job.Status.FAILED and "has no address for SSH" in job.error

    VM.objects.filter(pk=vm.pk).update(guest_address="127.0.0.1")
    Policy.objects.filter(pk=policy.pk).update(guest_ssh_user="nobody-here")
    job = backup(VM.objects.get(pk=vm.pk), destination)
    assert job.status == Job.Status.FAILED
    assert job.error == (
        f"The pre-snapshot command cannot run: SSH authentication as nobody-here@127.0.0.1:{sshd['port']} failed: "
        "the key or password was refused."
    )


def test_it_keeps_the_guest_key_write_only_and_lets_an_admin_set_the_guest_address(
    api_as,
    guest,
    sshd,
):
    vm, policy, _ = guest
    admin = api_as(roles.ADMIN)
    url = reverse("api:policy-detail", kwargs={"pk": policy.pk})
    body = admin.get(url).json()
    assert body["has_guest_ssh_key"] is True and "guest_ssh_private_key" not in body
    response = admin.patch(url, {"guest_ssh_private_key": "not a key"}, format="json")
    assert response.status_code == 400 and "guest_ssh_private_key" in response.json()["error"]["fields"]

    vm_url = reverse("api:vm-detail", kwargs={"pk": vm.pk})
    assert api_as(roles.OPERATOR).patch(vm_url, {"guest_address": "10.0.0.5"}, format="json").status_code == 403
    response = admin.patch(vm_url, {"guest_address": "10.0.0.5", "name": "renamed"}, format="json")
    assert response.status_code == 200
    vm.refresh_from_db()
    assert (vm.guest_address, vm.name) == ("10.0.0.5", "test01")  # the engine's facts are not ours to edit


def test_it_keeps_the_stored_guest_key_when_the_form_leaves_it_empty(client, users, guest, sshd):
    from django.forms.models import model_to_dict

    vm, policy, _ = guest
    client.force_login(users[roles.OPERATOR])
    url = reverse("policy-edit", kwargs={"pk": policy.pk})
    page = client.get(url).content.decode()
    assert "guest_ssh_private_key" in page and "PRIVATE KEY-----\n" not in page.split("guest_ssh_private_key")[1]
    data = {k: v for k, v in model_to_dict(policy).items() if v is not None and k not in ("vms", "id")}
    data |= {"excluded_disks": "", "guest_ssh_user": "backup", "guest_ssh_private_key": ""}
    assert client.post(url, data).status_code == 302
    policy.refresh_from_db()
    assert policy.guest_ssh_user == "backup" and policy.guest_ssh_private_key == sshd["key"]
    response = client.post(url, data | {"guest_ssh_private_key": "not a key"})
    assert response.status_code == 200 and b"is not an unencrypted OpenSSH" in response.content
    assert client.post(url, data | {"clear_guest_ssh_private_key": "on"}).status_code == 302
    policy.refresh_from_db()
    assert policy.guest_ssh_private_key == ""


def test_it_abandons_a_pre_command_that_runs_too_long(guest, destination):
    vm, policy, _ = guest
    Policy.objects.filter(pk=policy.pk).update(pre_snapshot_command="sleep 30", guest_command_timeout=1)
    job = backup(vm, destination)
    assert job.status == Job.Status.FAILED
    assert job.error == "The pre-snapshot command did not finish in 1s; it was abandoned."


def test_it_refuses_a_guest_whose_host_key_changed(guest, destination, sshd):
    vm, policy, log = guest
    Policy.objects.filter(pk=policy.pk).update(pre_snapshot_command=f"echo pre >> {log}")
    VM.objects.filter(pk=vm.pk).update(guest_host_key=sshd["other_key"])
    job = backup(VM.objects.get(pk=vm.pk), destination)
    assert job.status == Job.Status.FAILED
    assert "The pre-snapshot command cannot run: The SSH host key of" in job.error and "changed" in job.error
    assert not log.exists(), "nothing may run on a machine that is not the one we know"


def test_it_lets_an_admin_set_the_guest_address_and_forget_its_host_key(client, users, guest, sshd):
    vm, policy, _ = guest
    VM.objects.filter(pk=vm.pk).update(guest_host_key=sshd["host_key"])
    client.force_login(users[roles.ADMIN])
    url = reverse("vm-guest-access", kwargs={"pk": vm.pk})
    assert url in client.get(reverse("vm-detail", kwargs={"pk": vm.pk})).content.decode()
    assert fingerprint(sshd["host_key"]) in client.get(url).content.decode()
    response = client.post(url, {"guest_address": "10.1.2.3", "forget_host_key": "on"})
    assert response.status_code == 302
    vm.refresh_from_db()
    assert (vm.guest_address, vm.guest_host_key, vm.ssh_address) == ("10.1.2.3", "", "10.1.2.3")
    client.force_login(users[roles.OPERATOR])
    assert url not in client.get(reverse("vm-detail", kwargs={"pk": vm.pk})).content.decode()
    assert client.get(url).status_code == 403
