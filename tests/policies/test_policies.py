"""Policies: bad input is refused with a message that names the field."""

import pytest
from django.urls import reverse

from core import roles
from policies.models import Policy
from repository.models import BackupDestination


def error_fields(response) -> dict:
    body = response.json()["error"]
    assert body["status"] == 400
    return body["fields"]


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


def test_it_shows_form_errors_next_to_the_field(client, users, destination):
    client.force_login(users[roles.OPERATOR])
    response = client.post(reverse("policy-new"), {"name": "p", "destination": destination.pk, "schedule": "nope"})
    assert response.status_code == 200
    assert b'data-field="schedule"' in response.content
    assert b"is not a cron schedule" in response.content


def test_it_keeps_a_deleted_policys_jobs_started_by_nothing(api_as, destination):
    """A job's policy is a generic reference, with no ON DELETE of its own: deleting the policy keeps its
    jobs and clears the reference, so that a later policy given the same id never seems to own them."""
    from core import roles
    from jobs.models import Job
    from policies.models import Policy

    policy = Policy.objects.create(name="gone", destination=destination)
    job = Job.objects.create(kind="verify", started_by=policy, status="succeeded", name="gone's backups")
    assert api_as(roles.OPERATOR).delete(f"/api/v1/policies/{policy.pk}/").status_code == 204
    job.refresh_from_db()
    assert (job.started_by_type, job.started_by_id, job.started_by) == (None, None, None)


def test_it_keeps_a_strategys_options_on_a_policy_and_its_backups(api_as, client, users, destination):
    """A policy carries its strategy's options, checked against the strategy's declared schema by the
    API and the form; a backup the policy covers runs with them unless asked otherwise."""
    from inventory.models import VM, Host, Manager
    from strategies.backup import request_backup

    api = api_as(roles.OPERATOR)
    body = {"name": "p", "destination": destination.pk, "strategy": "image_transfer"}
    response = api.post(reverse("api:policy-list"), {**body, "strategy_options": {"netcat": True}}, format="json")
    assert error_fields(response)["strategy_options"] == [
        "Option netcat is the SSH transfer strategy's (ssh_transfer), not the Disk image transfer strategy's; the "
        "Disk image transfer strategy has no options. Choose ssh_transfer or leave netcat out."
    ]
    body["strategy"] = "ssh_transfer"
    response = api.post(reverse("api:policy-list"), {**body, "strategy_options": {"speed": 9}}, format="json")
    assert error_fields(response)["strategy_options"] == [
        "Unknown option 'speed': the SSH transfer strategy's options are: netcat."
    ]
    response = api.post(reverse("api:policy-list"), {**body, "strategy_options": {"netcat": True}}, format="json")
    assert response.status_code == 201, response.content
    policy = Policy.objects.get(name="p")
    assert policy.strategy_options == {"netcat": True}
    client.force_login(users[roles.OPERATOR])
    assert b"SSH transfer through netcat: on" in client.get(reverse("policy-detail", args=[policy.pk])).content

    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    host = Host.objects.create(manager=manager, engine_id="22222222-2222-2222-2222-222222222222", name="h1")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01", host=host)
    policy.vms.add(vm)
    assert request_backup(vm=vm, origin="cli").params["options"] == {"netcat": True}

    # A new strategy without options keeps none of the old one's.
    response = api.patch(reverse("api:policy-detail", args=[policy.pk]), {"strategy": "image_transfer"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["strategy_options"] == {}

    # The form offers the options of every strategy and refuses one of another than the policy's.
    form = {"name": "p2", "destination": destination.pk, "strategy": "image_transfer", "schedule": "0 1 * * *"}
    response = client.post(reverse("policy-new"), {**form, "ssh_transfer__netcat": "on"})
    assert response.status_code == 200 and b'data-field="ssh_transfer__netcat"' in response.content
    assert b"Choose ssh_transfer or leave netcat out." in response.content
    assert not Policy.objects.filter(name="p2").exists()
