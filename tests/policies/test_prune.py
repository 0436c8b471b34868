"""Retention of a policy from the API, the page, the form, and after every backup it makes."""

import os

import pytest
from django.urls import reverse

from core import roles
from inventory.models import VM
from jobs.models import Job
from policies.models import Policy
from repository.models import BackupPoint
from repository.verify import point_problems
from tests.helpers import assert_clean_engine, backup, kept_snapshots

MiB = 1024**2


@pytest.fixture
def policy(destination):
    return Policy.objects.create(name="nightly", destination=destination, keep_last=1)


def test_it_previews_and_queues_a_prune_through_the_api(manager, destination, demo_sim, policy, api_as):
    vm = VM.objects.get(manager=manager, name="test01")
    full = BackupPoint.objects.get(pk=backup(vm, destination, policy=policy, type="full").result["point"])
    demo_sim.guest_write(str(vm.engine_id), 0, os.urandom(MiB))
    newest = BackupPoint.objects.get(pk=backup(vm, destination, policy=policy, type="incremental").result["point"])
    url = reverse("api:policy-prune", kwargs={"pk": policy.pk})

    assert api_as(roles.VIEWER).post(url, {"dry_run": True}, format="json").status_code == 403
    preview = api_as(roles.OPERATOR).post(url, {"dry_run": True}, format="json")
    assert preview.status_code == 200
    assert [(d["point"], d["action"], d["reason"]) for d in preview.json()["plan"]] == [
        (newest.pk, "keep", "kept: one of the last 1; becomes a full (what it builds on is merged into it)"),
        (full.pk, "merge", f"merged into #{newest.pk}: a kept incremental depends on it"),
    ]
    assert BackupPoint.objects.kept().count() == 2, "a dry run changes nothing"
    bad = api_as(roles.OPERATOR).post(url, {"dry_run": "perhaps"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("dry_run:")

    queued = api_as(roles.OPERATOR).post(url, {}, format="json")
    assert queued.status_code == 202
    job = Job.objects.get(pk=queued.json()["job"])
    assert (job.kind, job.started_by, job.vm) == ("retention", policy, None)


@pytest.mark.django_db(transaction=True)  # the retention job is queued on commit, after the backup
def test_it_prunes_after_every_backup_of_the_policy(manager, destination, demo_sim, policy, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    vm = VM.objects.get(manager=manager, name="test01")
    made = []
    for i in range(3):
        demo_sim.guest_write(str(vm.engine_id), i * MiB, os.urandom(MiB))
        job = backup(vm, destination, policy=policy)
        assert job.status == Job.Status.SUCCEEDED, job.error
        made.append(job.result["point"])
    prunes = Job.objects.filter(kind="retention").order_by("pk")
    assert [(p.status, p.vm) for p in prunes] == [("succeeded", vm)] * 3
    (kept,) = BackupPoint.objects.kept().filter(vm=vm)
    assert kept.pk == made[-1] and kept.type == "full" and point_problems(kept) == []
    assert kept.base_id, "the newest point still keeps its snapshot for the next incremental"
    with demo_sim.connect() as conn:
        assert_clean_engine(conn, str(vm.engine_id), keep=kept_snapshots(vm))
    nxt = backup(vm, destination, policy=policy)
    assert nxt.result["type"] == "incremental"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keep_last", 0, "At least 1 backup; a policy that keeps none would delete every one."),
        ("keep_weekly", -1, "Ensure this value is greater than or equal to 0."),
        ("keep_days", -5, "Ensure this value is greater than or equal to 0."),
    ],
)
def test_it_refuses_keep_values_naming_the_field(api_as, client, users, destination, field, value, message):
    response = api_as(roles.OPERATOR).post(
        reverse("api:policy-list"), {"name": "p", "destination": destination.pk, field: value}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"][field] == [message]
    assert response.json()["error"]["message"] == f"{field}: {message}"

    client.force_login(users[roles.OPERATOR])
    form = {"name": "p", "destination": destination.pk, "schedule": "0 1 * * *", "strategy": "image_transfer"}
    form |= {"priority": 100, "full_every_days": 7, "max_chain_length": 14, "guest_ssh_user": "root"}
    form |= {"guest_ssh_port": 22, "guest_command_timeout": 300, "parallel_vms": 2}
    form |= {"keep_last": 7, "keep_days": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, field: value}
    page = client.post(reverse("policy-new"), form)
    assert page.status_code == 200 and message in page.context["form"].errors[field]
    assert not Policy.objects.exists()


def test_it_shows_the_preview_page_and_prunes_from_it(manager, destination, demo_sim, policy, client, users):
    vm = VM.objects.get(manager=manager, name="test01")
    backup(vm, destination, policy=policy, type="full")
    newest = backup(vm, destination, policy=policy, type="full").result["point"]
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("policy-prune-preview", kwargs={"pk": policy.pk}))
    assert b"deleted: not one of the last 1" in page.content and b"Prune now" not in page.content
    assert client.post(reverse("policy-prune", kwargs={"pk": policy.pk})).status_code == 403

    client.force_login(users[roles.OPERATOR])
    assert (
        reverse("policy-prune-preview", kwargs={"pk": policy.pk}).encode() in client.get(reverse("policy-list")).content
    )
    response = client.post(reverse("policy-prune", kwargs={"pk": policy.pk}))
    assert response.status_code == 302 and response["Location"].startswith("/jobs/")
    from jobs.runner import run_job

    run_job(int(response["Location"].rstrip("/").split("/")[-1]))
    assert list(BackupPoint.objects.kept().values_list("pk", flat=True)) == [newest]


def test_it_lists_a_preview_of_many_points_in_few_queries(
    db, destination, policy, client, users, django_assert_max_num_queries
):
    from datetime import timedelta

    from django.utils import timezone

    from inventory.models import Manager

    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    now = timezone.now()
    for n in range(5):
        vm = VM.objects.create(manager=manager, engine_id=f"11111111-1111-1111-1111-00000000000{n}", name=f"vm{n}")
        parent = None
        for day in range(20):
            parent = BackupPoint.objects.create(
                vm=vm,
                destination=destination,
                policy=policy,
                strategy="image_transfer",
                status="complete",
                type="full" if day % 7 == 0 else "incremental",
                parent=None if day % 7 == 0 else parent,
                started=now - timedelta(days=20 - day),
            )
    client.force_login(users[roles.VIEWER])
    with django_assert_max_num_queries(10):
        page = client.get(reverse("policy-prune-preview", kwargs={"pk": policy.pk}))
    assert page.content.count(b'class="decision') == 100
