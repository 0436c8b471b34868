"""The audit log: who did what and when, from which source; admins read it, nobody edits it."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from core import roles
from core.audit import record
from core.models import AuditEvent
from jobs.models import Job
from repository.models import BackupDestination
from tests.conftest import PASSWORD


@pytest.fixture
def destination(db, destination_dir):
    return BackupDestination.objects.create(name="local", path=str(destination_dir))


def actions():
    return list(AuditEvent.objects.order_by("pk").values_list("actor_name", "source", "action", "target_name"))


def test_it_records_logins_logouts_and_failed_logins_with_the_address(client, users):
    username = users[roles.OPERATOR].username
    client.post(reverse("login"), {"username": username, "password": "wrong"}, REMOTE_ADDR="192.0.2.7")
    client.post(reverse("login"), {"username": username, "password": PASSWORD}, REMOTE_ADDR="192.0.2.7")
    client.post(reverse("logout"), REMOTE_ADDR="192.0.2.7")
    assert actions() == [
        (username, "page", "login_failed", ""),
        (username, "page", "login", ""),
        (username, "page", "logout", ""),
    ]
    assert set(AuditEvent.objects.values_list("remote_address", flat=True)) == {"192.0.2.7"}
    failed = AuditEvent.objects.get(action="login_failed")
    assert failed.actor is None and "wrong" not in str(failed.details)


def test_it_records_policy_changes_through_the_api_and_the_pages(api_as, client, users, destination):
    api = api_as(roles.OPERATOR)
    created = api.post("/api/v1/policies/", {"name": "nightly", "destination": destination.pk}, format="json")
    assert created.status_code == 201
    pk = created.json()["id"]
    assert api.patch(f"/api/v1/policies/{pk}/", {"keep_last": 3}, format="json").status_code == 200
    client.force_login(users[roles.ADMIN])
    stored = api.get(f"/api/v1/policies/{pk}/").json()
    form = {k: v for k, v in stored.items() if isinstance(v, (str, int)) and v is not None} | {"keep_last": 4}
    assert client.post(reverse("policy-edit", args=[pk]), form).status_code == 302
    assert api.delete(f"/api/v1/policies/{pk}/").status_code == 204
    operator, admin = users[roles.OPERATOR].username, users[roles.ADMIN].username
    assert actions()[:2] == [
        (operator, "api", "policy_created", "nightly"),
        (operator, "api", "policy_changed", "nightly"),
    ]
    assert actions()[-1] == (operator, "api", "policy_deleted", "nightly")
    changed = AuditEvent.objects.get(action="policy_changed", source="api")
    assert changed.details == {"fields": ["keep_last"]} and changed.target_type == "policy"
    assert changed.target_id == str(pk) and changed.actor == users[roles.OPERATOR]
    assert AuditEvent.objects.get(source="page", action="policy_changed").actor_name == admin


def test_it_records_a_refused_delete_not_at_all(api_as, destination):
    from policies.models import Policy

    Policy.objects.create(name="uses-it", destination=destination)
    response = api_as(roles.ADMIN).delete(f"/api/v1/destinations/{destination.pk}/")
    assert response.status_code == 409
    assert not AuditEvent.objects.filter(action="destination_deleted").exists()


def test_it_records_a_cancelled_job_and_a_command(api_as, users, destination):
    job = Job.objects.create(kind="verify", name="every backup")
    assert api_as(roles.OPERATOR).post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 202
    call_command("verify", "--all")
    cancelled, verify = AuditEvent.objects.order_by("pk")
    assert (cancelled.action, cancelled.source, cancelled.target_type) == ("job_cancelled", "api", "job")
    assert (verify.action, verify.source, verify.actor) == ("verify_requested", "cli", None)
    assert verify.actor_name  # the account that ran the command
    assert verify.details["points"] == "all"


def test_it_keeps_the_name_of_a_user_who_is_deleted(users):
    operator = users[roles.OPERATOR]
    record(actor=operator, source="api", action="backup_requested")
    operator.delete()
    event = AuditEvent.objects.get()
    assert event.actor is None and event.actor_name == "operator-user"


def test_it_cannot_be_edited_or_deleted(client, users):
    event = record(actor=users[roles.ADMIN], source="page", action="login")
    event.action = "logout"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="logout")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    superuser = users[roles.ADMIN]
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    client.force_login(superuser)
    assert client.get(reverse("admin:core_auditevent_changelist")).status_code == 200
    change_url = reverse("admin:core_auditevent_change", args=[event.pk])
    assert client.post(change_url, {"action": "logout"}).status_code == 403
    assert client.post(reverse("admin:core_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:core_auditevent_add")).status_code == 403
    assert AuditEvent.objects.filter(action="logout").count() == 0


def test_it_serves_the_log_to_admins_only_with_filters(api_as, users):
    now = timezone.now()
    record(actor=users[roles.OPERATOR], source="api", action="backup_requested")
    record(actor="mallory", source="page", action="login_failed")
    AuditEvent.objects.create(time=now - timedelta(days=3), actor_name="old", source="cli", action="login")
    admin = api_as(roles.ADMIN)
    assert admin.get("/api/v1/audit/").json()["count"] == 3
    assert [e["actor_name"] for e in admin.get("/api/v1/audit/?action=login_failed").json()["results"]] == ["mallory"]
    assert admin.get("/api/v1/audit/?source=api").json()["results"][0]["action"] == "backup_requested"
    since = (now - timedelta(days=1)).isoformat()
    assert admin.get("/api/v1/audit/", {"since": since}).json()["count"] == 2
    assert admin.get("/api/v1/audit/", {"until": since}).json()["results"][0]["actor_name"] == "old"
    assert admin.get(f"/api/v1/audit/?actor={users[roles.OPERATOR].pk}").json()["count"] == 1
    assert admin.get("/api/v1/audit/?actor=1e300").json()["error"]["message"].startswith("actor: ")
    bad = admin.get("/api/v1/audit/?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["error"]["fields"]
    for role in (roles.OPERATOR, roles.VIEWER):
        assert api_as(role).get("/api/v1/audit/").status_code == 403
    assert admin.delete(f"/api/v1/audit/{AuditEvent.objects.first().pk}/").status_code == 405
    assert AuditEvent.objects.count() == 3


def test_it_shows_the_log_page_to_admins_with_filters_and_pages(client, users, django_assert_max_num_queries):
    for i in range(120):
        record(actor=users[roles.OPERATOR], source="api", action="backup_requested", job=i)
    record(actor="mallory", source="page", action="login_failed")
    client.force_login(users[roles.ADMIN])
    with django_assert_max_num_queries(8):
        page = client.get(reverse("audit-log"))
    assert page.status_code == 200
    assert page.content.decode().count('class="audit-event"') == 50 and "Page 1 of 3" in page.content.decode()
    last = client.get(reverse("audit-log"), {"source": "api", "page": 3}).content.decode()
    assert last.count('class="audit-event"') == 20 and "Job: 0<" in last
    filtered = client.get(reverse("audit-log"), {"action": "login_failed"}).content.decode()
    assert filtered.count('class="audit-event"') == 1 and "mallory" in filtered
    assert "Login failed" in filtered and ">login_failed<" not in filtered  # a label, not the key
    client.force_login(users[roles.OPERATOR])
    assert client.get(reverse("audit-log")).status_code == 403


def test_it_records_a_forgotten_host_key_through_the_api(api_as, users):
    from inventory.models import Host, Manager

    manager = Manager.objects.create(name="m", api_url="https://engine.example.com/ovirt-engine/api")
    host = Host.objects.create(
        manager=manager,
        engine_id="00000000-0000-0000-0000-0000000000a1",
        name="h1",
        ssh_host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    )
    response = api_as(roles.ADMIN).patch(f"/api/v1/hosts/{host.pk}/", {"ssh_host_key": ""}, format="json")
    assert response.status_code == 200, response.json()
    assert actions() == [("admin-user", "api", "host_changed", "h1"), ("admin-user", "api", "host_key_forgotten", "h1")]


def test_it_records_user_changes_in_the_django_admin_and_token_commands(client, users):
    superuser = users[roles.ADMIN]
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    client.force_login(superuser)
    viewer = users[roles.VIEWER]
    response = client.post(reverse("admin:auth_user_delete", args=[viewer.pk]), {"post": "yes"})
    assert response.status_code == 302
    call_command("create_token", "operator-user", "--name", "backup script")
    (deleted,) = AuditEvent.objects.filter(action="user_deleted")
    assert (deleted.actor_name, deleted.source, deleted.target_name) == ("admin-user", "page", "viewer-user")
    (created,) = AuditEvent.objects.filter(action="token_created")
    assert created.source == "cli" and created.details == {"user": "operator-user"}
    assert "backup script" in created.target_name


def test_it_records_tokens_made_and_revoked_through_the_api_and_the_page(api_as, client, users):
    created = api_as(roles.VIEWER).post("/api/v1/tokens/", {"name": "laptop"}, format="json").json()
    api_as(roles.VIEWER).delete(f"/api/v1/tokens/{created['id']}/")
    client.force_login(users[roles.OPERATOR])
    client.post(reverse("token-list"), {"name": "ci", "days": 30})
    made = [e[1:3] + (e[3].split("(")[-1],) for e in actions() if e[2].startswith("token_")]
    assert made == [
        ("api", "token_created", "laptop)"),
        ("api", "token_revoked", "laptop)"),
        ("page", "token_created", "ci)"),
    ]
