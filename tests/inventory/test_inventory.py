"""Managers and inventory against the simulated engine, through ovirtsdk4 only."""

import io
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core import roles
from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager, StorageDomain
from inventory.ssh import test_ssh
from inventory.sync import request_sync, sync_manager
from jobs.models import Job
from jobs.runner import run_job
from ovirt.connection import fetch_ca_certificate, normalize_api_url, test_connection
from tests.conftest import register_manager


@pytest.fixture
def manager(db, demo_sim):
    return register_manager(demo_sim)


@pytest.mark.parametrize(
    "raw, url, assumed",
    [
        ("engine.example.com", "https://engine.example.com/ovirt-engine/api", True),
        ("engine.example.com:8443", "https://engine.example.com:8443/ovirt-engine/api", True),
        ("https://engine.example.com/ovirt-engine", "https://engine.example.com/ovirt-engine/api", True),
        ("https://engine.example.com/ovirt-engine/api/", "https://engine.example.com/ovirt-engine/api", False),
    ],
)
def test_it_normalizes_the_engine_url_and_says_what_it_assumed(raw, url, assumed):
    normalized, note = normalize_api_url(raw)
    assert normalized == url
    assert bool(note) == assumed and (not note or url in note)


def test_it_refuses_plain_http():
    with pytest.raises(ValueError, match="https"):
        normalize_api_url("http://engine.example.com/ovirt-engine/api")


def test_it_passes_the_connection_test_and_lists_possible_strategies(manager):
    report = test_connection(manager)
    assert report.ok, report.error
    steps = [s.name for s in report.steps]
    assert steps == ["connect", "tls", "authentication", "permissions", "version", "hosts", "permits"]
    assert report.version.startswith("4.5")
    assert set(report.strategies) == {"disk_attachment", "image_transfer", "ssh_transfer", "cbt", "export_domain"}
    # The admin holds every permit; the step lists what each strategy and restore needs.
    assert "Disk image transfer: manipulate_vm_snapshots, edit_disk_properties;" in report.steps[-1].message
    assert "Restore: create_disk, edit_disk_properties, import_export_vm" in report.steps[-1].message


@pytest.mark.parametrize(
    "change, step, message",
    [
        ({"password": "wrong"}, "authentication", "The username or password is incorrect"),
        ({"api_url": "https://127.0.0.1:1/ovirt-engine/api"}, "connect", "Cannot connect to 127.0.0.1:1"),
        ({"api_url": "https://no-such-engine.invalid/ovirt-engine/api"}, "connect", "Cannot resolve"),
        ({"ca_certificate": "other"}, "tls", "TLS verification failed"),
    ],
)
def test_it_says_which_step_of_the_connection_failed(manager, tmp_path, change, step, message):
    if change.get("ca_certificate") == "other":
        from ovirtsim.pki import PKI

        other = PKI(tmp_path / "pki")
        other.ensure()
        change = {"ca_certificate": other.ca_file.read_text()}
    for key, value in change.items():
        setattr(manager, key, value)
    report = test_connection(manager)
    assert not report.ok
    assert report.steps[-1].name == step
    assert message in report.error


def test_it_gives_the_cli_the_same_messages(db, demo_sim, tmp_path):
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("nope\n")
    right.write_text(demo_sim.password + "\n")

    def add_manager(name, username, password_file, **kwargs):
        call_command(
            "add_manager",
            name=name,
            url=demo_sim.api_url,
            username=username,
            password_file=str(password_file),
            ca_file=demo_sim.ca_file,
            no_sync=True,
            **kwargs,
        )

    with pytest.raises(CommandError, match="The username or password is incorrect"):
        add_manager("x", "admin@internal", wrong)
    with pytest.raises(CommandError, match="user@domain"):
        add_manager("x", "admin", wrong)
    out = io.StringIO()
    add_manager("cli", "admin@internal", right, stdout=out)
    manager = Manager.objects.get(name="cli")
    assert out.getvalue().strip() == str(manager.pk)
    assert manager.password == demo_sim.password and manager.status == Manager.Status.OK


def test_it_fetches_the_engine_ca_with_its_fingerprint(demo_sim):
    cert = fetch_ca_certificate(demo_sim.api_url)
    assert cert.pem.strip() == Path(demo_sim.ca_file).read_text().strip()
    assert len(cert.fingerprint.split(":")) == 32 and "ovirtsim engine CA" in cert.subject


def test_it_syncs_the_demo_engine(manager):
    result = sync_manager(manager)
    assert result["counts"]["vms"] >= 6 and result["counts"]["hosts"] == 3
    assert result["counts"]["data_centers"] == 1 and result["counts"]["clusters"] == 2
    web = VM.objects.get(manager=manager, name="web01")
    assert web.status == "up" and web.guest_agent and web.cluster.name == "Production"
    assert sorted(web.tags.values_list("name", flat=True)) == ["production"]
    assert sorted(web.disks.values_list("name", flat=True)) == ["web01_data", "web01_os"]
    os_disk = web.disks.get(name="web01_os")
    assert (os_disk.format, os_disk.bootable, os_disk.provisioned_size) == ("cow", True, 64 * 2**20)
    assert os_disk.storage_domain.name == "data-nfs"
    legacy = VM.objects.get(manager=manager, name="legacy01")
    assert legacy.guest_agent is False and legacy.guest_agent_text == "no"
    assert web.guest_agent_text == "yes"
    # A VM that is down has no agent the engine can hear: it is not "no".
    assert VM.objects.get(manager=manager, name="test01").guest_agent_text == "unknown while the VM is not running"
    db_os = Disk.objects.get(manager=manager, name="db01_os")
    assert db_os.incremental_backup and db_os.incremental_blocker() == ""
    assert "RAW" in Disk.objects.get(manager=manager, name="db01_data").incremental_blocker()
    assert "not enabled" in Disk.objects.get(manager=manager, name="web01_os").incremental_blocker()
    block = StorageDomain.objects.get(manager=manager, name="data-block")
    assert block.storage_kind == "iscsi" and block.is_block and block.available_bytes > 0
    assert Host.objects.get(manager=manager, name="host2").status == "maintenance"
    manager.refresh_from_db()
    assert manager.last_sync and manager.engine_version.startswith("4.5")


def test_it_makes_a_bounded_number_of_api_calls(manager, demo_sim):
    before = demo_sim.request_count()
    sync_manager(manager)
    assert demo_sim.request_count() - before == 8


def test_it_follows_changes_on_the_engine_and_keeps_what_is_gone(manager, demo_sim):
    sdk_conn = demo_sim.connect()
    try:
        system = sdk_conn.system_service()
        vm = system.vms_service().add(types.Vm(name="added01", cluster=types.Cluster(name="Development")))
        disk_ids = []
        for n in range(2):
            disk = system.disks_service().add(
                types.Disk(
                    name=f"added01_d{n}",
                    provisioned_size=2**20,
                    format=types.DiskFormat.COW,
                    storage_domains=[types.StorageDomain(name="data-nfs")],
                )
            )
            disk_ids.append(disk.id)
        from tests.ovirtsim.helpers import wait_for

        for disk_id in disk_ids:
            wait_for(lambda d=disk_id: system.disks_service().disk_service(d).get().status == types.DiskStatus.OK)
            system.vms_service().vm_service(vm.id).disk_attachments_service().add(
                types.DiskAttachment(disk=types.Disk(id=disk_id), interface=types.DiskInterface.VIRTIO)
            )
        sync_manager(manager)
        added = VM.objects.get(manager=manager, engine_id=vm.id)
        assert added.disks.count() == 2
        system.disks_service().disk_service(disk_ids[1]).remove()
        result = sync_manager(manager)
    finally:
        sdk_conn.close()
    assert result["missing"]["disks"] == 1
    gone = Disk.objects.get(manager=manager, engine_id=disk_ids[1])
    assert gone.missing and gone.missing_since is not None  # kept, marked missing
    assert not Disk.objects.get(manager=manager, engine_id=disk_ids[0]).missing


def test_it_runs_sync_as_a_job_with_events(manager, django_capture_on_commit_callbacks, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    with django_capture_on_commit_callbacks(execute=True):
        job = request_sync(manager, origin="cli")
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["counts"]["vms"] >= 6 and job.result["api_calls"] == 8
    assert job.result["duration_seconds"] >= 0
    messages = list(job.events.values_list("message", flat=True))
    assert any(m.startswith("Read ") for m in messages) and any(m.startswith("Stored ") for m in messages)


def test_it_never_runs_two_syncs_of_one_manager(manager):
    first = request_sync(manager, origin="cli")
    second = request_sync(manager, origin="cli")
    assert first.pk == second.pk
    assert Job.objects.filter(kind="sync", manager=manager).count() == 1
    assert run_job(first.pk) == Job.Status.SUCCEEDED
    third = request_sync(manager, origin="cli")
    assert third.pk != first.pk


def test_it_fails_a_sync_with_the_connection_tests_words(manager):
    manager.password = "wrong"
    manager.save()
    job = Job.objects.create(kind="sync", manager=manager)
    assert run_job(job.pk) == Job.Status.FAILED
    job.refresh_from_db()
    assert "The username or password is incorrect" in job.error
    manager.refresh_from_db()
    assert manager.status == Manager.Status.ERROR


def test_it_picks_managers_due_for_a_periodic_sync(manager):
    from django.utils import timezone

    assert list(Manager.objects.due_for_sync()) == [manager]
    manager.last_sync = timezone.now()
    manager.save()
    assert list(Manager.objects.due_for_sync()) == []
    manager.sync_interval_minutes = 0
    manager.last_sync = None
    manager.save()
    assert list(Manager.objects.due_for_sync()) == []


def test_it_adds_a_manager_through_the_api(api_as, demo_sim, django_capture_on_commit_callbacks, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    admin = api_as(roles.ADMIN)
    host = demo_sim.api_url.split("//")[1].split("/")[0]
    ca = admin.post(reverse("api:manager-fetch-ca"), {"api_url": host}, format="json").json()
    assert ca["fingerprint_sha256"] and ca["api_url"] == demo_sim.api_url
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            reverse("api:manager-list"),
            {
                "name": "api",
                "api_url": host,
                "username": "admin@internal",
                "password": demo_sim.password,
                "ca_certificate": ca["ca_certificate"],
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert "password" not in body and body["api_url"] == demo_sim.api_url and "Assumed" in body["api_url_note"]
    assert VM.objects.filter(manager_id=body["id"]).count() >= 6
    # The sync the POST queued is named in its answer, to follow before backing a VM up; once done, none is.
    sync = Job.objects.get(pk=body["sync_job"])
    assert (sync.kind, sync.status, sync.manager_id) == ("sync", "succeeded", body["id"])
    detail = reverse("api:manager-detail", kwargs={"pk": body["id"]})
    assert admin.get(detail).json()["sync_job"] is None
    report = admin.post(reverse("api:manager-test", kwargs={"pk": body["id"]})).json()
    assert report["ok"] and report["steps"][2]["name"] == "authentication"
    response = api_as(roles.OPERATOR).post(reverse("api:manager-sync", kwargs={"pk": body["id"]}))
    assert response.status_code == 202
    queued = response.json()["job"]
    assert admin.get(detail).json()["sync_job"] == queued
    listed = admin.get(reverse("api:manager-list"), {"name": "api"}).json()["results"]
    assert [m["sync_job"] for m in listed] == [queued]


def test_it_filters_vms_in_the_api(api_as, manager):
    sync_manager(manager)
    viewer = api_as(roles.VIEWER)
    names = {v["name"] for v in viewer.get(reverse("api:vm-list"), {"tag": "production"}).json()["results"]}
    assert names == {"web01", "db01"}
    body = viewer.get(reverse("api:vm-list"), {"search": "legacy"}).json()
    assert [v["guest_agent"] for v in body["results"]] == [False]
    assert body["results"][0]["protected"] is False and body["results"][0]["last_backup_status"] is None


def test_it_keeps_the_inventory_page_queries_flat(client, users, manager):
    client.force_login(users[roles.VIEWER])
    sync_manager(manager)

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("vm-list")).status_code == 200
        return len(ctx)

    few = queries()
    cluster = VM.objects.filter(manager=manager).first().cluster
    VM.objects.bulk_create(
        [
            VM(manager=manager, engine_id=f"00000000-0000-0000-0000-{n:012d}", name=f"bulk{n}", cluster=cluster)
            for n in range(200)
        ]
    )
    # Another manager with its own data center and cluster costs no extra query either.
    other = Manager.objects.create(name="other", api_url=manager.api_url, username="admin@internal")
    dc = DataCenter.objects.create(manager=other, engine_id="00000000-0000-0000-0001-000000000001", name="dc2")
    Cluster.objects.create(manager=other, engine_id="00000000-0000-0000-0001-000000000002", name="c2", data_center=dc)
    assert queries() == few


def test_it_tests_ssh_to_a_host(manager, sshd):
    sync_manager(manager)
    host = Host.objects.get(manager=manager, name="host1")
    # Without credentials of its own a host is tried as root with the site key, which it refuses.
    result = test_ssh(host)
    assert not result.ok and "site's public key" in result.message, result.message
    host.address, host.ssh_port, host.ssh_user = "127.0.0.1", sshd["port"], sshd["user"]
    host.ssh_private_key = sshd["key"]
    host.save()
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert result.ok, result.message
    assert "Logged in to" in result.message
    assert Host.objects.get(pk=host.pk).ssh_host_key == sshd["host_key"]  # learnt at the first login
    Host.objects.filter(pk=host.pk).update(ssh_host_key=sshd["other_key"])
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert not result.ok and "host key of" in result.message and "changed" in result.message, result.message
    Host.objects.filter(pk=host.pk).update(ssh_host_key=sshd["host_key"])
    host.ssh_private_key = ""
    host.ssh_password = "not-accepted"
    host.save()
    result = test_ssh(Host.objects.get(pk=host.pk))
    assert not result.ok and "refused" in result.message


def test_it_edits_host_ssh_secrets_write_only(api_as, manager, sshd):
    sync_manager(manager)
    host = Host.objects.get(manager=manager, name="host3")
    admin = api_as(roles.ADMIN)
    url = reverse("api:host-detail", kwargs={"pk": host.pk})
    response = admin.patch(url, {"ssh_private_key": "not a key"}, format="json")
    assert response.status_code == 400 and "ssh_private_key" in response.json()["error"]["fields"]
    response = admin.patch(
        url, {"ssh_private_key": sshd["key"], "ssh_port": sshd["port"], "ssh_user": sshd["user"]}, format="json"
    )
    assert response.status_code == 200 and response.json()["has_ssh_key"] is True
    assert "ssh_private_key" not in response.json()
    assert api_as(roles.OPERATOR).patch(url, {"ssh_port": 2222}, format="json").status_code == 403
    Host.objects.filter(pk=host.pk).update(address="127.0.0.1")
    assert admin.post(reverse("api:host-test-ssh", kwargs={"pk": host.pk})).json()["ok"] is True
    assert admin.get(url).json()["ssh_host_key"] == sshd["host_key"]
    response = admin.patch(url, {"ssh_host_key": "not a key"}, format="json")
    assert response.status_code == 400 and "ssh_host_key" in response.json()["error"]["fields"]
    assert admin.patch(url, {"ssh_host_key": ""}, format="json").json()["ssh_host_key"] == ""


def test_it_queues_a_sync_from_the_command_line(manager, django_capture_on_commit_callbacks, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("sync", "demo", stdout=out)
    job = Job.objects.get(pk=int(out.getvalue().strip()))
    assert job.status == Job.Status.SUCCEEDED and job.result["counts"]["vms"] >= 6
    with pytest.raises(CommandError, match="No manager named 'nope'"):
        call_command("sync", "nope")


def test_it_shows_and_forgets_a_hosts_ssh_host_key(client, users, manager, sshd):
    from core.ssh import fingerprint

    sync_manager(manager)
    host = Host.objects.get(manager=manager, name="host1")
    Host.objects.filter(pk=host.pk).update(ssh_host_key=sshd["host_key"])
    client.force_login(users[roles.ADMIN])
    url = reverse("host-edit", kwargs={"pk": host.pk})
    assert fingerprint(sshd["host_key"]) in client.get(url).content.decode()
    response = client.post(url, {"ssh_user": "root", "ssh_port": 22, "forget_host_key": "on", "action": "save"})
    assert response.status_code == 302
    assert Host.objects.get(pk=host.pk).ssh_host_key == ""
    assert "not known yet" in client.get(url).content.decode()


def test_it_keeps_the_vm_page_queries_flat_in_the_number_of_backup_points(client, users, manager, tmp_path):
    from repository.models import BackupDestination, BackupPoint

    client.force_login(users[roles.VIEWER])
    sync_manager(manager)
    vm = VM.objects.get(manager=manager, name="web01")
    destination = BackupDestination.objects.create(name="d", path=str(tmp_path))

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("vm-detail", kwargs={"pk": vm.pk})).status_code == 200
        return len(ctx)

    BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer")
    one = queries()
    BackupPoint.objects.bulk_create(
        [BackupPoint(vm=vm, destination=destination, strategy="image_transfer") for _ in range(20)]
    )
    assert queries() == one
