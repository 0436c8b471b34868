"""The restore wizard's page: whole VM or chosen disks (floating or attached), cluster and storage
domain pickers with free space, the path and its reason, the new VM's name checked against the
engine before anything is queued, and wording that agrees with Replace."""

import re

import pytest

from core import roles
from jobs.models import Job
from recovery.restore import RESTORE
from tests.repository.point_pages_helpers import make_chain


def checked(page: str, name: str) -> list[str]:
    """The values of the checked inputs of this name."""
    inputs = re.findall(rf'<input[^>]*name="{name}"[^>]*>', page)
    return [re.search(r'value="([^"]*)"', i)[1] for i in inputs if " checked" in i]


@pytest.fixture
def chain(db, destination_dir):
    return make_chain(destination_dir)


@pytest.fixture
def operator(client, users):
    client.force_login(users[roles.OPERATOR])
    return client


def test_it_shows_the_wizard_with_its_chain_pickers_and_path(operator, chain):
    full, inc, damaged = chain["points"]
    page = operator.get(f"/backups/{inc.pk}/restore/").content.decode()
    assert "Chain: ." not in page and "it never replaces an existing VM" not in page
    assert (
        "Read through its chain: " in page and f">Full {full.pk}</a>" in page and f"<b>Incremental {inc.pk}</b>" in page
    )
    assert "replaced only if you tick Replace" in page
    for legend in ("What to restore", "The new VM", "The disks", "Storage and path"):
        assert f"<legend>{legend}</legend>" in page
    assert "data1 (NFS, 500.0 GiB free)" in page and "Production (data center dc)" in page
    assert "web01_disk1 (20.0 GiB)" in page and '<option value="web01">web01</option>' in page
    # The path the automatic choice takes, with its reason, said once above and once in its option.
    assert "Automatic: through the engine&#x27;s image transfers (imageio)" in page
    assert checked(page, "what") == ["vm"] and checked(page, "disk_target") == ["floating"]


def test_it_opens_on_one_disk_from_the_point_page(operator, chain):
    point, disk = chain["points"][0], chain["disks"][1]
    page = operator.get(f"/backups/{point.pk}/restore/?what=disks&disks={disk.engine_id}").content.decode()
    assert checked(page, "what") == ["disks"] and checked(page, "disks") == [str(disk.engine_id)]


def test_it_refuses_a_damaged_backup_in_words(operator, chain):
    damaged = chain["points"][2]
    page = operator.get(f"/backups/{damaged.pk}/restore/").content.decode()
    assert "only a complete backup can be restored" in page and 'id="restore-form"' not in page


def test_it_asks_for_the_disks_and_the_vm_to_attach_them_to(operator, chain):
    point = chain["points"][0]
    page = operator.post(f"/backups/{point.pk}/restore/", {"what": "disks", "disk_target": "attach"}).content.decode()
    assert (
        "Choose at least one disk to restore." in page and "Choose the VM the restored disks are attached to." in page
    )
    assert not Job.objects.filter(kind=RESTORE).exclude(pk=chain["restore"].pk).exists()


def test_it_refuses_a_path_that_cannot_be_taken_in_words(operator, chain):
    point, disk = chain["points"][0], chain["disks"][0]
    page = operator.post(
        f"/backups/{point.pk}/restore/",
        {
            "what": "disks",
            "disks": [str(disk.engine_id)],
            "disk_target": "floating",
            "transfer": "ssh",
            "allocation": "original",
        },
    ).content.decode()
    assert "No host of VM web01" in page and "is up to restore over SSH" in page


def test_it_confirms_a_floating_disk_restore_then_queues_it(operator, chain, settings):
    point, disk = chain["points"][0], chain["disks"][0]
    data = {
        "what": "disks",
        "disks": [str(disk.engine_id)],
        "disk_target": "floating",
        "allocation": "thin",
        "storage_domain": "data1",
    }
    page = operator.post(f"/backups/{point.pk}/restore/", data).content.decode()
    assert (
        'id="confirm-restore"' in page and "<b>floating</b>: attached to no VM" in page and "<b>web01_disk1</b>" in page
    )
    assert "Disks are written through the engine&#x27;s image transfers (imageio)." in page
    assert not Job.objects.filter(kind=RESTORE).exclude(pk=chain["restore"].pk).exists()
    # "Change" brings the form back as it was filled in.
    page = operator.post(f"/backups/{point.pk}/restore/", {**data, "change": "1"}).content.decode()
    assert 'id="restore-form"' in page and 'id="confirm-restore"' not in page and 'value="thin" selected' in page
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # queued, not run: the engine is not real
    response = operator.post(f"/backups/{point.pk}/restore/", {**data, "confirm": "True"})
    job = Job.objects.filter(kind=RESTORE).exclude(pk=chain["restore"].pk).get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.params["floating"] is True and job.params["disks"] == [str(disk.engine_id)]
    assert job.params["storage_domain"] == "data1" and job.params["allocation"] == "thin"


def test_it_checks_the_new_vms_name_against_the_engine_before_queueing(client, users, demo_point):
    client.force_login(users[roles.OPERATOR])
    url = f"/backups/{demo_point.pk}/restore/"
    base = {"what": "vm", "allocation": "original", "transfer": "imageio"}
    # db01 exists (and runs): refused in words, nothing queued.
    page = client.post(url, {**base, "name": "db01"}).content.decode()
    assert "A VM named db01 already exists on the engine (up). Choose another name, or tick Replace" in page
    assert 'id="confirm-restore"' not in page
    # Replace a VM that runs: refused too.
    page = client.post(url, {**base, "name": "db01", "replace": "on"}).content.decode()
    assert "The VM db01 that Replace would remove is up: shut it down first" in page
    # Replace a VM that is down: the confirmation says what happens to it.
    page = client.post(url, {**base, "name": "test01", "replace": "on"}).content.decode()
    assert 'id="replace-warning"' in page and "The engine has a VM named test01 (down)" in page
    # A free name: said free.
    page = client.post(url, {**base, "name": "app01-restored-wizard"}).content.decode()
    assert "No VM is named app01-restored-wizard on the engine: the name is free." in page
    # Even at the confirmation step a taken name is refused.
    page = client.post(url, {**base, "name": "db01", "confirm": "True"}).content.decode()
    assert "A VM named db01 already exists" in page
    assert not Job.objects.filter(kind=RESTORE).exists()
