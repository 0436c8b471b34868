"""Alerts: failed, damaged, skipped and RPO-missed events reach e-mail (a real SMTP sink) and a
signed webhook (a real HTTP receiver), retried with backoff, at once or in a daily digest."""

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.events import check_alerts, check_rpo, deliver_alert, send_digests
from alerts.models import AlertDelivery, AlertEvent, AlertRule
from core import roles
from inventory.models import VM
from jobs.models import Job
from jobs.runner import run_job
from policies.models import Policy
from repository.models import BackupDestination, BackupPoint
from repository.verify import request_verify
from tests.alerts.conftest import SECRET
from tests.helpers import backup
from tests.recovery.test_integrity import flip_bytes


@pytest.fixture
def local_destination(db, destination_dir):
    return BackupDestination.objects.create(name="local", path=str(destination_dir))


@pytest.fixture
def policy(local_destination):
    return Policy.objects.create(name="nightly", destination=local_destination)


@pytest.fixture
def sync_tasks(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}


def failed_job(policy, vm=None, error="Snapshot creation timed out"):
    job = Job.objects.create(kind="backup", name=vm.name if vm else "web01", started_by=policy, vm=vm)
    job.start()
    job.fail(error)
    return job


def test_it_mails_and_signs_a_webhook_when_a_policy_backup_fails(
    policy, smtp_sink, webhook, sync_tasks, django_capture_on_commit_callbacks
):
    AlertRule.objects.create(
        policy=policy, emails="ops@example.com, oncall@example.com", webhook_url=webhook.url, webhook_secret=SECRET
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = failed_job(policy)
    (message,) = smtp_sink.messages
    assert sorted(message["to"]) == ["oncall@example.com", "ops@example.com"]
    assert message["subject"] == "[oVirt Backup] Backup of web01 failed"
    assert "Snapshot creation timed out" in message["body"]
    ((status, signed, body),) = webhook.calls
    assert (status, signed) == (200, True)
    assert body["policy"] == "nightly" and body["events"][0]["details"] == {
        "job": job.pk,
        "error": "Snapshot creation timed out",
    }
    assert sorted(AlertDelivery.objects.values_list("channel", "status", "attempts")) == [
        ("email", "sent", 1),
        ("webhook", "sent", 1),
    ]


def test_it_says_nothing_of_jobs_that_succeed_or_have_no_alert_rule(policy, smtp_sink, sync_tasks):
    other = Policy.objects.create(name="silent", destination=policy.destination)
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    failed_job(other)
    ok = Job.objects.create(kind="backup", name="web02", started_by=policy)
    ok.start()
    ok.succeed()
    assert AlertEvent.objects.count() == 0 and smtp_sink.messages == []


def test_it_alerts_on_a_job_ending_skipped_by_its_window(policy):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.runner import skip_late_jobs

    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com", digest="daily")
    closed = timezone.now() - timedelta(minutes=1)
    Job.objects.create(
        kind="backup", name="web03", started_by=policy, not_after=closed, skip_reason="The backup window closed."
    )
    assert skip_late_jobs(now=timezone.now()) == 1
    event = rule.events.get()
    assert (event.kind, event.subject) == ("skipped", "Backup of web03 skipped")


def test_it_retries_a_failing_webhook_with_backoff_then_records_success(policy, webhook):
    webhook.fail_first = 2
    rule = AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    failed_job(policy)
    slept = []
    deliver_alert(rule.events.get().pk, sleep=slept.append)
    assert [status for status, _, _ in webhook.calls] == [503, 503, 200]
    assert slept == [1, 4]
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 3, "")
    assert rule.events.get().sent is not None


def test_it_records_a_webhook_that_never_answers_well(policy, webhook):
    webhook.fail_first = 10
    rule = AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    failed_job(policy)
    slept = []
    deliver_alert(rule.events.get().pk, sleep=slept.append)
    delivery = AlertDelivery.objects.get()
    assert slept == [1, 4, 16] and delivery.attempts == 4
    assert delivery.status == "failed" and delivery.error == f"{webhook.url} answered HTTP 503 Service Unavailable"


def test_it_records_an_smtp_server_that_is_down(policy, settings):
    from tests.conftest import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com")
    failed_job(policy)
    deliver_alert(rule.events.get().pk)
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.error == f"The mail server 127.0.0.1:{settings.EMAIL_PORT} refused the connection"


def test_it_gathers_a_daily_digest_and_sends_it_once_a_day(policy, smtp_sink, webhook, sync_tasks):
    rule = AlertRule.objects.create(
        policy=policy, emails="ops@example.com", webhook_url=webhook.url, webhook_secret=SECRET, digest="daily"
    )
    for name in ("web01", "web02", "db01"):
        failed_job(policy, error=f"{name} is locked")
    assert smtp_sink.messages == [] and webhook.calls == []  # nothing until the digest
    now = timezone.now()
    assert send_digests(now=now) == 1
    (message,) = smtp_sink.messages
    assert message["subject"] == "[oVirt Backup] 3 alerts of policy nightly"
    assert all(f"{name} is locked" in message["body"] for name in ("web01", "web02", "db01"))
    ((_, signed, body),) = webhook.calls
    assert signed and body["digest"] is True and len(body["events"]) == 3
    failed_job(policy, error="later")
    assert send_digests(now=now + timedelta(hours=23)) == 0  # once a day
    assert send_digests(now=now + timedelta(hours=24)) == 1
    assert "later" in smtp_sink.messages[-1]["body"] and len(smtp_sink.messages) == 2
    assert rule.events.pending().count() == 0


def test_it_alerts_once_when_a_covered_vm_misses_its_rpo(manager, policy, local_destination, smtp_sink, sync_tasks):
    vm = VM.objects.get(manager=manager, name="test01")
    policy.vms.add(vm)
    AlertRule.objects.create(policy=policy, emails="ops@example.com", rpo_hours=24, digest="daily")
    now = timezone.now()
    BackupPoint.objects.create(
        vm=vm, destination=local_destination, policy=policy, status="complete", started=now - timedelta(hours=30)
    )
    (event,) = check_rpo(now=now)
    assert event.vm == vm and event.subject.startswith("test01 has no backup within 24 h (none since ")
    assert check_rpo(now=now + timedelta(hours=1)) == []  # told once per lapse
    BackupPoint.objects.create(vm=vm, destination=local_destination, policy=policy, status="complete", started=now)
    assert check_rpo(now=now + timedelta(hours=2)) == []
    (again,) = check_rpo(now=now + timedelta(hours=25))
    assert again.vm == vm
    check_alerts(now=now + timedelta(hours=25))  # the periodic task: the digest carries both
    (message,) = smtp_sink.messages
    assert message["subject"] == "[oVirt Backup] 2 alerts of policy nightly"


@pytest.mark.django_db(transaction=True)
def test_it_alerts_when_verify_finds_a_policy_backup_damaged(manager, destination, smtp_sink, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    policy = Policy.objects.create(name="nightly", destination=destination)
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full", policy=policy).result["point"])
    (entry,) = point.manifest().disks
    flip_bytes(point.directory.path / entry.file)
    job = request_verify(origin="cli", points=[point])
    run_job(job.pk)
    damaged = f"[oVirt Backup] Backup {point.pk} of test01 is damaged"
    subjects = [m["subject"] for m in smtp_sink.messages]
    assert damaged in subjects  # the verify job has no policy: the damaged point names it
    body = next(m["body"] for m in smtp_sink.messages if m["subject"] == damaged)
    assert "does not match its checksum" in body
    run_job(request_verify(origin="cli", points=[point]).pk)  # found again: already known, no second alert
    assert [m["subject"] for m in smtp_sink.messages].count(damaged) == 1


def test_it_lists_deliveries_to_viewers_and_rules_without_the_secret(api_as, policy, webhook):
    AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    failed_job(policy)
    deliver_alert(AlertEvent.objects.get().pk)
    viewer = api_as(roles.VIEWER)
    (rule,) = viewer.get("/api/v1/alert-rules/").json()["results"]
    assert "webhook_secret" not in rule and rule["has_webhook_secret"] is True
    (delivery,) = viewer.get("/api/v1/alert-deliveries/").json()["results"]
    assert delivery["status"] == "sent" and delivery["channel"] == "webhook"
    assert viewer.patch(f"/api/v1/alert-rules/{rule['id']}/", {"rpo_hours": 4}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("webhook_url", "ftp://hooks.example.com/x", "Webhook URL must start with http:// or https://"),
        ("webhook_url", "hooks.example.com/x", "Webhook URL must start with http:// or https://"),
        ("emails", "ops@example.com, not-an-address", "Not an e-mail address: not-an-address."),
        ("rpo_hours", 0, "The RPO is at least 1 hour; leave it empty for no RPO alert."),
        ("rpo_hours", -5, "The RPO is at least 1 hour; leave it empty for no RPO alert."),
        ("digest", "hourly", '"hourly" is not a valid choice.'),
    ],
)
def test_it_refuses_bad_alert_settings_naming_the_field(api_as, policy, field, value, message):
    response = api_as(roles.OPERATOR).post(
        "/api/v1/alert-rules/", {"policy": policy.pk, field: value, "webhook_secret": SECRET}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"{field}: {message}")
    assert AlertRule.objects.count() == 0


def test_it_needs_a_secret_to_sign_a_webhook_and_keeps_it_when_omitted(api_as, policy, webhook):
    api = api_as(roles.OPERATOR)
    refused = api.post("/api/v1/alert-rules/", {"policy": policy.pk, "webhook_url": webhook.url}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("webhook_secret: ")
    created = api.post(
        "/api/v1/alert-rules/",
        {"policy": policy.pk, "webhook_url": webhook.url, "webhook_secret": SECRET},
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    assert api.patch(f"/api/v1/alert-rules/{pk}/", {"rpo_hours": 12}, format="json").status_code == 200
    assert AlertRule.objects.get().webhook_secret == SECRET


def test_it_shows_rules_and_deliveries_on_the_alerts_page(
    client, users, policy, webhook, django_assert_max_num_queries
):
    from django.urls import reverse

    webhook.fail_first = 10
    for i in range(5):
        other = Policy.objects.create(name=f"p{i}", destination=policy.destination)
        AlertRule.objects.create(policy=other, emails=f"team{i}@example.com")
    rule = AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    failed_job(policy)
    deliver_alert(rule.events.get().pk, sleep=lambda s: None)
    client.force_login(users[roles.VIEWER])
    with django_assert_max_num_queries(10):
        page = client.get(reverse("alert-channels"))
    text = page.content.decode()
    assert text.count('class="alert-rule"') == 6 and "team4@example.com" in text
    assert "Failed after 4 tries: " in text and "answered HTTP 503" in text
    assert "Edit</a>" not in text  # a viewer cannot change them
    assert "Send a test" not in text  # nor send tests


def test_it_edits_a_policys_alerts_on_its_page_keeping_the_secret(client, users, policy, webhook):
    from django.urls import reverse

    from core.models import AuditEvent

    client.force_login(users[roles.VIEWER])
    assert client.get(reverse("alert-edit", args=[policy.pk])).status_code == 403
    client.force_login(users[roles.OPERATOR])
    url = reverse("alert-edit", args=[policy.pk])
    bad = client.post(url, {"emails": "ops@", "webhook_url": "file:///etc/passwd", "rpo_hours": "0", "digest": "daily"})
    assert bad.status_code == 200
    errors = bad.context["form"].errors
    assert errors["webhook_url"] == ["Webhook URL must start with http:// or https://"]
    assert errors["emails"] == ["Not an e-mail address: ops@. Separate addresses with commas."]
    assert errors["rpo_hours"] == ["The RPO is at least 1 hour; leave it empty for no RPO alert."]
    form = {"emails": "ops@example.com", "webhook_url": webhook.url, "webhook_secret": SECRET, "digest": "daily"}
    assert client.post(url, form).status_code == 302
    assert client.post(url, form | {"webhook_secret": "", "rpo_hours": "6"}).status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.webhook_secret, rule.rpo_hours, rule.digest) == (SECRET, 6, "daily")
    assert SECRET not in client.get(url).content.decode()
    assert list(
        AuditEvent.objects.filter(source="page", action__startswith="alert")
        .values_list("action", flat=True)
        .order_by("pk")
    ) == [
        "alert_rule_created",
        "alert_rule_changed",
    ]


def test_it_says_one_rule_of_the_rpo_on_its_field(client, users, policy):
    """At least 1 hour, empty for none: the input's minimum, its check and its message agree."""
    import re

    from django.urls import reverse

    client.force_login(users[roles.OPERATOR])
    url = reverse("alert-edit", args=[policy.pk])
    page = client.get(url).content.decode()
    (rpo_input,) = re.findall(r'<input[^>]*name="rpo_hours"[^>]*>', page)
    assert 'min="1"' in rpo_input
    assert "at least 1; empty for no RPO alert" in page
    for value in ("-5", "0"):
        refused = client.post(url, {"emails": "ops@example.com", "rpo_hours": value, "digest": "daily"})
        assert refused.context["form"].errors == {
            "rpo_hours": ["The RPO is at least 1 hour; leave it empty for no RPO alert."]
        }, value
    assert not AlertRule.objects.exists()
    assert client.post(url, {"emails": "ops@example.com", "rpo_hours": "", "digest": "daily"}).status_code == 302
    assert AlertRule.objects.get().rpo_hours is None
    assert client.post(url, {"emails": "ops@example.com", "rpo_hours": "1", "digest": "daily"}).status_code == 302
    assert AlertRule.objects.get().rpo_hours == 1


def test_it_raises_an_alert_when_a_policys_retention_fails(policy):
    """A prune that could not merge a chain (a damaged file) leaves the repository beyond its rules."""
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com")
    job = Job.objects.create(kind="retention", name="nightly: web01", started_by=policy)
    job.start()
    job.fail("Backup 12 cannot become a full: disk.qcow2 does not match its checksum.")
    (event,) = rule.events.all()
    assert event.subject == "Retention of nightly: web01 failed"


BLOCKED_WEBHOOKS = [
    ("http://127.0.0.1:5432/", "127.0.0.1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
    ("http://192.168.0.10/hook", "192.168.0.10 is a private address"),
    ("http://172.16.5.4/hook", "172.16.5.4 is a private address"),
    ("http://100.64.0.1/hook", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://0.0.0.0:8080/", "0.0.0.0 is the unspecified address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://[::1]:8080/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:8080/", "::ffff:127.0.0.1 is a loopback address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fd00::1]/", "fd00::1 is a private address"),
    ("http://[2002:7f00:1::1]/", "2002:7f00:1::1 is a loopback address"),  # 6to4 around 127.0.0.1
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "2001:0:4136:e378:8000:63bf:80ff:fffe is a loopback address"),
    ("http://[64:ff9b:1::a00:1]/", "64:ff9b:1::a00:1 is a site-local NAT64 address"),
    ("http://localhost:5432/", "localhost (127.0.0.1) is a loopback address"),
]


@pytest.mark.parametrize(("url", "why"), BLOCKED_WEBHOOKS)
def test_it_refuses_to_save_a_webhook_on_a_loopback_private_or_link_local_address(
    api_as, client, users, policy, settings, url, why
):
    from django.urls import reverse

    settings.ALERT_WEBHOOK_ALLOW = []
    response = api_as(roles.OPERATOR).post(
        "/api/v1/alert-rules/", {"policy": policy.pk, "webhook_url": url, "webhook_secret": SECRET}, format="json"
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"].replace("(::1)", "(127.0.0.1)")  # localhost: either
    assert message.startswith(f"webhook_url: The webhook's host {why}: webhooks may not reach loopback"), message
    assert "ALERT_WEBHOOK_ALLOW" in message
    client.force_login(users[roles.OPERATOR])
    page = client.post(
        reverse("alert-edit", args=[policy.pk]), {"webhook_url": url, "webhook_secret": SECRET, "digest": "immediate"}
    )
    (error,) = page.context["form"].errors["webhook_url"]
    error = error.replace("(::1)", "(127.0.0.1)")
    assert error.startswith(f"The webhook's host {why}: ")
    assert AlertRule.objects.count() == 0


def test_it_saves_a_private_webhook_an_admin_allows_by_network_or_name(api_as, policy, settings):
    api = api_as(roles.OPERATOR)
    settings.ALERT_WEBHOOK_ALLOW = ["10.1.0.0/16", "localhost"]
    for url in ("http://10.1.2.3/hook", "http://localhost:5432/"):
        response = api.post(
            "/api/v1/alert-rules/", {"policy": policy.pk, "webhook_url": url, "webhook_secret": SECRET}, format="json"
        )
        assert response.status_code == 201, response.json()
        AlertRule.objects.all().delete()
    refused = api.post(
        "/api/v1/alert-rules/",
        {"policy": policy.pk, "webhook_url": "http://10.2.0.1/hook", "webhook_secret": SECRET},
        format="json",
    )
    assert refused.status_code == 400


def test_it_refuses_at_send_a_webhook_changed_behind_the_forms_back_telling_nothing_of_ports(policy, webhook, settings):
    """Rows written straight to the database (or saved before the check existed) are checked at each send;
    an open port and a closed one give the same record, and nothing is called."""
    from tests.conftest import free_port

    settings.ALERT_WEBHOOK_ALLOW = []
    closed = f"http://127.0.0.1:{free_port()}/hooks/backup"
    name = webhook.url.replace("127.0.0.1", "localhost")
    for i, url in enumerate([webhook.url, closed, name]):
        rule = AlertRule.objects.create(
            policy=Policy.objects.create(name=f"p{i}", destination=policy.destination),
            webhook_url=url,
            webhook_secret=SECRET,
        )
        failed_job(rule.policy)
        slept = []
        deliver_alert(rule.events.get().pk, sleep=slept.append)
        assert slept == []  # a refused host is not tried again
    assert webhook.calls == []
    errors = list(AlertDelivery.objects.order_by("pk").values_list("status", "attempts", "error"))
    refused = (
        "failed",
        0,
        "Not sent: The webhook's host 127.0.0.1 is a loopback address: webhooks may not reach loopback, "
        "private or link-local addresses unless an admin allows them (ALERT_WEBHOOK_ALLOW).",
    )
    assert errors[:2] == [refused, refused]
    assert errors[2][2].startswith("Not sent: The webhook's host localhost (") and "a loopback address" in errors[2][2]


def test_it_calls_an_allowed_host_name_at_its_checked_address_with_its_own_host_header(policy, webhook, settings):
    settings.ALERT_WEBHOOK_ALLOW = ["localhost"]  # the name, not its address
    by_name = webhook.url.replace("127.0.0.1", "localhost")
    rule = AlertRule.objects.create(policy=policy, webhook_url=by_name, webhook_secret=SECRET)
    failed_job(policy)
    deliver_alert(rule.events.get().pk)
    assert [status for status, _, _ in webhook.calls] == [200]
    assert webhook.hosts == [by_name.split("/")[2]]
    rule.webhook_url = webhook.url  # the same address by number is not allowed
    rule.save()
    failed_job(policy)
    deliver_alert(rule.events.pending().get().pk)
    assert len(webhook.calls) == 1
    assert AlertDelivery.objects.order_by("pk").last().error.startswith("Not sent: The webhook's host 127.0.0.1 is")


def test_it_does_not_follow_a_webhook_redirect(policy, webhook, second_webhook):
    webhook.redirect_to = second_webhook.url
    rule = AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    failed_job(policy)
    deliver_alert(rule.events.get().pk, sleep=lambda s: None)
    assert second_webhook.calls == []
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.error == f"{webhook.url} answered HTTP 302 Found; redirects are not followed"


def test_it_stops_at_start_on_a_mistyped_webhook_allow_list(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.ALERT_WEBHOOK_ALLOW = ["10.0.0.0/33"]
    with pytest.raises(SystemCheckError, match=r"ALERT_WEBHOOK_ALLOW: '10.0.0.0/33' is neither a network"):
        call_command("check")
