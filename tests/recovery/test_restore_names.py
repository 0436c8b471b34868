"""A new VM's name, checked before anything is queued, by the one rule of the engine's names
(ovirt.vms.vm_name_problem) and the one check on the engine (recovery.restore.check_new_vm_name)
in the restore wizard, the restore API, and instant restore's form and API: a name taken is refused
in words (Replace respected where it exists), and nothing is queued or made on the engine."""

import pytest

from core import roles
from jobs.models import Job
from ovirt.connection import connect
from recovery.models import InstantRestore
from recovery.restore import RESTORE
from tests.recovery.instant_helpers import make_estate

BAD_NAMES = [
    ("bad name!*", "this one has ' ', '!', '*'."),
    ("x" * 300, "this one has 300 characters."),
]


@pytest.fixture
def estate(db, destination_dir):
    """Rows of an engine that is not there: a name the engine would refuse is refused before it is asked."""
    return make_estate(destination_dir)


def restore_api(api_as, point, body: dict):
    return api_as(roles.OPERATOR).post(f"/api/v1/backups/{point.pk}/restore/", body, format="json")


def test_it_refuses_a_taken_name_in_the_restore_api_as_the_wizard_does(api_as, demo_point, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}  # queued, not run: the demo VM stays
    # db01 exists and runs: 400 in the one error body, nothing queued.
    taken = restore_api(api_as, demo_point, {"name": "db01"})
    assert taken.status_code == 400, taken.content
    message = (
        'A VM named db01 already exists on the engine (up). Choose another name, or send "replace": true to have '
        "the restored VM take its place."
    )
    assert taken.json()["error"] == {
        "status": 400,
        "code": "invalid",
        "message": f"name: {message}",
        "fields": {"name": [message]},
    }
    # Replace a VM that runs: refused, as on the wizard.
    running = restore_api(api_as, demo_point, {"name": "db01", "replace": True})
    assert running.status_code == 400
    assert running.json()["error"]["fields"] == {
        "name": ["The VM db01 that Replace would remove is up: shut it down first, or choose another name."]
    }
    # Imported from an export domain, a VM replaces none of the engine's: its name must be free.
    imported = restore_api(
        api_as,
        demo_point,
        {"name": "test01", "export_domain": True, "import_vm": True, "storage_domain": "nfs-data", "replace": True},
    )
    assert imported.status_code == 400
    assert imported.json()["error"]["fields"] == {
        "name": ["A VM named test01 already exists on the engine (down). Choose another name."]
    }
    assert not Job.objects.filter(kind=RESTORE).exists()

    # Replace a VM that is down: queued, as the wizard queues it.
    replaced = restore_api(api_as, demo_point, {"name": "test01", "replace": True})
    assert replaced.status_code == 202, replaced.content
    job = Job.objects.get(kind=RESTORE)
    assert replaced["Location"] == f"/api/v1/jobs/{job.pk}/"
    assert (job.params["name"], job.params["replace"]) == ("test01", True)
    # Disks restored into an existing VM name no new VM: db01 is where they go, not a name taken.
    into = restore_api(api_as, demo_point, {"name": "db01", "attach_to": "app01"})
    assert into.status_code == 202, into.content


@pytest.mark.parametrize(("name", "why"), BAD_NAMES)
def test_it_refuses_a_name_the_engine_would_refuse_in_the_restore_api(api_as, estate, name, why):
    response = restore_api(api_as, estate["point"], {"name": name})
    assert response.status_code == 400
    said = response.json()["error"]["fields"]["name"]
    assert said == [f"The engine takes a VM name of at most 64 letters, digits, '-', '_' or '.'; {why}"]
    assert not Job.objects.exists()


def test_it_says_so_when_the_engine_cannot_be_asked_about_the_name(api_as, estate):
    response = restore_api(api_as, estate["point"], {"name": "web00-restored"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["non_field_errors"]
    assert error["message"].startswith("Could not check on the engine whether a VM is named web00-restored: ")
    assert error["message"].endswith(". Nothing was queued.")
    assert not Job.objects.exists()


@pytest.mark.parametrize(("name", "why"), BAD_NAMES)
def test_it_refuses_a_name_the_engine_would_refuse_in_the_wizard(client, users, estate, name, why):
    client.force_login(users[roles.OPERATOR])
    url = f"/backups/{estate['point'].pk}/restore/"
    base = {"what": "vm", "allocation": "original", "transfer": "imageio"}
    page = client.post(url, {**base, "name": name}).content.decode().replace("&#x27;", "'")
    assert f"The engine takes a VM name of at most 64 letters, digits, '-', '_' or '.'; {why}" in page
    assert 'id="confirm-restore"' not in page
    assert not Job.objects.exists()


def test_it_refuses_a_taken_name_for_an_instant_restore_with_nothing_made(client, users, api_as, demo_point):
    client.force_login(users[roles.OPERATOR])
    with connect(demo_point.vm.manager) as conn:
        domains = {d.name for d in conn.system_service().storage_domains_service().list()}
    # The form: refused on the field, in words.
    page = client.post(f"/backups/{demo_point.pk}/instant/", {"name": "db01", "cluster": "", "migrate_to": ""})
    assert page.status_code == 200
    assert "A VM named db01 already exists on the engine (up). Choose another name." in page.content.decode()
    # The API: 400 naming the field.
    response = api_as(roles.OPERATOR).post(
        f"/api/v1/backups/{demo_point.pk}/instant-restore/", {"name": "test01"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "name": ["A VM named test01 already exists on the engine (down). Choose another name."]
    }
    # Nothing queued, recorded or made on the engine (no share served, no storage domain).
    assert not Job.objects.exists() and not InstantRestore.objects.exists()
    with connect(demo_point.vm.manager) as conn:
        assert {d.name for d in conn.system_service().storage_domains_service().list()} == domains
