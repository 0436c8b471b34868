"""Inputs that used to answer 500: each is refused with a message, or handled (trust issue, item 3)."""

import pytest
from django.urls import reverse

from core import roles
from inventory.models import VM, Manager
from jobs.models import Job
from ovirt.connection import normalize_api_url
from policies.models import Policy
from repository.models import BackupDestination, BackupPoint


def message(response) -> str:
    return response.json()["error"]["message"]


@pytest.fixture
def dest(db, destination_dir):
    return BackupDestination.objects.create(name="d", path=str(destination_dir))


@pytest.mark.parametrize("role", [roles.VIEWER, roles.OPERATOR, roles.ADMIN])
def test_it_serves_the_api_root(api_as, role):
    response = api_as(role).get("/api/v1/")
    assert response.status_code == 200 and "vms" in response.json()["endpoints"]
    assert api_as("anonymous").get("/api/v1/").status_code == 401


def test_it_refuses_a_cron_that_never_fires(api_as, dest):
    body = {"name": "p", "destination": dest.pk, "schedule": "0 0 31 2 *"}
    response = api_as(roles.OPERATOR).post(reverse("api:policy-list"), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["schedule"] == [
        "'0 0 31 2 *' never fires: no date matches it within a year."
    ]


def test_it_matches_a_python_only_regex_without_breaking_the_vm_pages(api_as, client, users, dest):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    for n, name in enumerate(["web01", "db01"]):
        VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=name)
    Policy.objects.create(name="p", destination=dest, match_name_regex="(?P<n>web)")
    response = api_as(roles.VIEWER).get(reverse("api:vm-list"))
    assert response.status_code == 200
    assert {v["name"]: v["protected"] for v in response.json()["results"]} == {"web01": True, "db01": False}
    client.force_login(users[roles.VIEWER])
    assert client.get(reverse("vm-list")).status_code == 200


def test_it_keeps_long_job_names_within_their_column(db):
    job = Job.objects.create(kind="restore", name="x" * 255 + " -> " + "y" * 255)
    job.refresh_from_db()
    assert len(job.name) == 200 and job.name.endswith("…")


@pytest.mark.parametrize(
    "path, expected",
    [("/tmp/with\0nul", "The path contains a NUL character."), ("/tmp/" + "n" * 300, "longer than 255 bytes")],
)
def test_it_refuses_impossible_destination_paths(api_as, path, expected):
    body = {"name": "bad", "path": path}
    response = api_as(roles.ADMIN).post(reverse("api:destination-list"), body, format="json")
    assert response.status_code == 400 and expected in message(response)


def test_it_refuses_to_delete_what_backups_refer_to(api_as, dest):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1")
    BackupPoint.objects.create(vm=vm, destination=dest, strategy="image_transfer", status="complete")
    for url in (
        reverse("api:manager-detail", kwargs={"pk": manager.pk}),
        reverse("api:destination-detail", kwargs={"pk": dest.pk}),
    ):
        response = api_as(roles.ADMIN).delete(url)
        assert response.status_code == 409
        assert message(response).startswith("It cannot be deleted: 1 backup point still refer to it")
    assert Manager.objects.exists() and BackupDestination.objects.exists()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("javascript:alert(1)", "has no valid port"),
        ("h" * 290, "too long to be a DNS name"),
        ("https://engine.example/ovirt-engine/../../etc/passwd", "must end in /ovirt-engine/api"),
    ],
)
def test_it_refuses_engine_urls_that_cannot_work(api_as, raw, expected):
    with pytest.raises(ValueError, match=expected):
        normalize_api_url(raw)
    body = {"name": "m", "api_url": raw, "username": "admin@internal", "password": "x", "verify_tls": False}
    response = api_as(roles.ADMIN).post(reverse("api:manager-list"), body, format="json")
    assert response.status_code == 400 and expected in message(response)
    assert not Manager.objects.exists()


def test_it_refuses_a_fetch_ca_request_that_is_not_an_object(api_as):
    response = api_as(roles.ADMIN).post(reverse("api:manager-fetch-ca"), ["engine.example"], format="json")
    assert response.status_code == 400 and "Send an object" in message(response)


def test_it_refuses_a_host_name_with_control_characters(api_as):
    # fetch-ca dialled it: http.client refused the URL with an exception nobody caught.
    body = {"api_url": "engine\x1c.example"}
    response = api_as(roles.ADMIN).post(reverse("api:manager-fetch-ca"), body, format="json")
    assert response.status_code == 400
    assert message(response) == (
        "api_url: 'engine\\x1c.example' is not a host name: use letters, digits, hyphens and dots, or an IP address."
    )


def test_it_answers_an_api_url_no_route_matches_with_the_error_body(api_as, client, users):
    # A generated id (a float): no route matches, so the request never reached DRF.
    response = api_as(roles.VIEWER).get("/api/v1/vms/5.5e-253/")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"status": 404, "code": "not_found", "message": "Not found.", "fields": {}}}
    client.force_login(users[roles.VIEWER])
    assert "text/html" in client.get("/inventory/vms/nope/")["Content-Type"]


def test_it_answers_409_to_a_second_backup_of_a_vm_with_one_queued(api_as, dest):
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="web01")
    url = reverse("api:vm-backup", kwargs={"pk": vm.pk})
    first = api_as(roles.OPERATOR).post(url, {"destination": "d", "type": "full"}, format="json")
    assert first.status_code == 202  # on_commit never runs here: the job stays queued
    again = api_as(roles.OPERATOR).post(url, {"destination": "d"}, format="json")
    assert again.status_code == 409
    assert message(again) == f"A backup of web01 is already queued (job {first.json()['job']})."


def test_it_takes_audit_times_with_any_offset_and_refuses_those_out_of_range(api_as):
    """PostgreSQL refuses offsets over 15:59 hours: a time is given to the database in UTC; one that
    UTC puts before year 1 is refused in words (both answered 500 once, found by the schema fuzzing)."""
    client = api_as(roles.ADMIN)
    response = client.get("/api/v1/audit/", {"since": "0071-11-11T03:16:40+23:08"})
    assert response.status_code == 200, response.content
    response = client.get("/api/v1/audit/", {"until": "0001-01-01T00:00:00+23:00"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["until"] == ["Enter a time within the years 1 to 9999 (UTC)."]
