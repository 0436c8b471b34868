"""The alerts raised (/alerts/): newest first, by kind, paged, each linked to what it is about and
saying how telling people went; and the "Send a test" button of each channel (admins only), through
the real delivery code to a real SMTP server and webhook receiver, its failures in words."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from alerts.events import deliver_alert, raise_alert
from alerts.models import AlertDelivery, AlertEvent, AlertRule
from core import roles
from jobs.models import Job
from policies.models import Policy
from repository.models import BackupDestination, BackupPoint
from tests.alerts.conftest import SECRET
from tests.alerts.history import make_vm
from tests.conftest import free_port


@pytest.fixture
def policy(db, destination_dir):
    destination = BackupDestination.objects.create(name="local", path=str(destination_dir))
    return Policy.objects.create(name="nightly", destination=destination)


def page_text(response) -> str:
    assert response.status_code == 200
    return response.content.decode().replace("\xa0", " ")


def test_it_lists_raised_alerts_newest_first_linked_to_what_they_are_about(client, users, policy, smtp_sink, webhook):
    webhook.fail_first = 10
    rule = AlertRule.objects.create(
        policy=policy, emails="ops@example.com", webhook_url=webhook.url, webhook_secret=SECRET
    )
    db01 = make_vm("db01")
    job = Job.objects.create(kind="backup", name="db01", vm=db01, started_by=policy)
    point = BackupPoint.objects.create(vm=db01, destination=policy.destination, strategy="cbt", status="damaged")
    now = timezone.now()
    failed = raise_alert(
        rule=rule,
        kind="failed",
        subject="Backup of db01 failed",
        vm=db01,
        now=now - timedelta(hours=2),
        job=job.pk,
        error="Snapshot creation timed out",
    )
    damaged = raise_alert(
        rule=rule,
        kind="damaged",
        subject=f"Backup {point.pk} of db01 is damaged",
        vm=db01,
        now=now,
        point=point.pk,
        problems=["disk1.qcow2: checksum mismatch"],
    )
    deliver_alert(failed.pk, sleep=lambda s: None)
    client.force_login(users[roles.VIEWER])  # viewers read alerts as they read the jobs they are about
    text = page_text(client.get(reverse("alert-list")))
    assert text.index("is damaged") < text.index("Backup of db01 failed")  # newest first
    assert f'<a href="{reverse("vm-detail", args=[db01.pk])}">db01</a>' in text
    assert f'<a href="{reverse("job-detail", args=[job.pk])}">job {job.pk}</a>' in text
    assert f'<a href="{reverse("point-detail", args=[point.pk])}">backup {point.pk}</a>' in text
    assert "disk1.qcow2: checksum mismatch" in text
    assert "Snapshot creation timed out" in text
    assert f"E-mail sent; Webhook failed after 4 tries: {webhook.url} answered HTTP 503 Service Unavailable" in text
    assert "Being sent" in text  # the damaged one: not delivered yet
    assert damaged.deliveries.count() == 0 and failed.deliveries.count() == 2


def test_it_filters_by_kind_and_pages_newest_first(client, users, policy):
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com", digest="daily")
    start = timezone.now() - timedelta(days=30)
    AlertEvent.objects.bulk_create(
        AlertEvent(
            rule=rule,
            kind="rpo" if n % 3 else "failed",
            subject=f"alert number {n:03d}.",
            time=start + timedelta(hours=n),
        )
        for n in range(150)
    )
    client.force_login(users[roles.OPERATOR])
    text = page_text(client.get(reverse("alert-list")))
    assert "Page 1 of 2 (150 in all)" in text and "alert number 149." in text and "alert number 049." not in text
    assert "Waiting for the daily digest" in text
    text = page_text(client.get(reverse("alert-list") + "?kind=failed"))
    assert "(50 in all)" not in text  # one page of 50
    assert text.count('class="raised failed"') == 50 and 'class="raised rpo"' not in text
    assert 'href="?kind=failed" class="on"' in text
    text = page_text(client.get(reverse("alert-list") + "?kind=change_rate"))
    assert "No alert of this kind." in text


@pytest.mark.parametrize("kind", ["failure", "failed\x00"])
def test_it_says_which_alert_kind_it_does_not_know(client, users, policy, kind):
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com")
    AlertEvent.objects.create(rule=rule, kind="failed", subject="Backup of db01 failed")
    client.force_login(users[roles.VIEWER])
    response = client.get(reverse("alert-list"), {"kind": kind})
    assert response.status_code == 400
    text = response.content.decode()
    assert "There is no alert kind" in text and "Backup of db01 failed" not in text


def test_it_sends_a_test_email_through_the_mail_server_and_says_so(client, users, policy, smtp_sink):
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    client.force_login(users[roles.ADMIN])
    response = client.post(reverse("alert-test", args=[policy.pk, "email"]), follow=True)
    text = page_text(response)
    assert "Test e-mail to ops@example.com sent." in text
    (message,) = smtp_sink.messages
    assert message["to"] == ["ops@example.com"]
    assert message["subject"] == "[oVirt Backup] Test message of the alerts of policy nightly"
    assert "admin-user" in message["body"]
    delivery = AlertDelivery.objects.get()
    assert (delivery.test, delivery.status, delivery.event_count) == (True, "sent", 0)
    assert AlertEvent.objects.count() == 0  # a test is no alert
    assert '<span class="tag">test</span>' in text


def test_it_says_in_words_that_the_mail_server_refused_the_connection(client, users, policy, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    client.force_login(users[roles.ADMIN])
    text = page_text(client.post(reverse("alert-test", args=[policy.pk, "email"]), follow=True))
    said = (
        f"Test e-mail to ops@example.com failed: The mail server 127.0.0.1:{settings.EMAIL_PORT} refused the connection"
    )
    assert f'<p class="flash error">{said}</p>' in text
    assert "Errno" not in text and "Traceback" not in text and "ConnectionRefusedError" not in text


def test_it_sends_a_signed_test_webhook_call_once(client, users, policy, webhook):
    AlertRule.objects.create(policy=policy, webhook_url=webhook.url, webhook_secret=SECRET)
    client.force_login(users[roles.ADMIN])
    text = page_text(client.post(reverse("alert-test", args=[policy.pk, "webhook"]), follow=True))
    assert f"Test webhook to {webhook.url} sent." in text
    ((status, signed, body),) = webhook.calls
    assert (status, signed, body) == (200, True, {"policy": "nightly", "digest": False, "test": True, "events": []})


def test_it_says_in_words_that_a_webhook_receiver_refused_the_connection_without_retrying(
    client, users, policy, webhook
):
    port = free_port()
    AlertRule.objects.create(policy=policy, webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret=SECRET)
    client.force_login(users[roles.ADMIN])
    text = page_text(client.post(reverse("alert-test", args=[policy.pk, "webhook"]), follow=True))
    assert f"failed: The webhook receiver 127.0.0.1:{port} refused the connection" in text
    assert AlertDelivery.objects.get().attempts == 1


@pytest.mark.parametrize("role", [roles.VIEWER, roles.OPERATOR])
def test_it_lets_only_admins_send_tests(client, users, policy, smtp_sink, role):
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    client.force_login(users[role])
    assert client.post(reverse("alert-test", args=[policy.pk, "email"])).status_code == 403
    assert smtp_sink.messages == [] and AlertDelivery.objects.count() == 0
    assert "Send a test" not in page_text(client.get(reverse("alert-channels")))


def test_it_says_when_there_is_nothing_to_test(client, users, policy):
    client.force_login(users[roles.ADMIN])
    text = page_text(client.post(reverse("alert-test", args=[policy.pk, "email"]), follow=True))
    assert "Policy nightly has no alerts set up: nothing to test." in text
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    text = page_text(client.post(reverse("alert-test", args=[policy.pk, "webhook"]), follow=True))
    assert "Policy nightly has no webhook to send a test to." in text
    assert client.get(reverse("alert-test", args=[policy.pk, "email"])).status_code == 405


def test_it_shows_a_webhooks_path_only_to_those_who_may_edit_it(client, users, policy, api_as):
    """A chat service's incoming hook is its URL: a viewer sees where alerts go, not the key in it."""
    hook = "https://hooks.example.com/services/T000/B000/s3cr3tKEY"
    rule = AlertRule.objects.create(policy=policy, webhook_url=hook, webhook_secret=SECRET)
    AlertDelivery.objects.create(rule=rule, channel="webhook", target=hook, subject="x", status="sent")
    client.force_login(users[roles.VIEWER])
    page = page_text(client.get(reverse("alert-channels")))
    assert "s3cr3tKEY" not in page and "https://hooks.example.com/…" in page
    viewer = api_as(roles.VIEWER)
    assert viewer.get(f"/api/v1/alert-rules/{rule.pk}/").json()["webhook_url"] == "https://hooks.example.com/…"
    assert "s3cr3tKEY" not in viewer.get("/api/v1/alert-deliveries/").content.decode()
    client.force_login(users[roles.OPERATOR])
    assert hook in page_text(client.get(reverse("alert-channels")))
    assert api_as(roles.OPERATOR).get(f"/api/v1/alert-rules/{rule.pk}/").json()["webhook_url"] == hook
