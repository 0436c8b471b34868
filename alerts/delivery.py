"""Sending alerts: one e-mail (Django's mail settings) and one signed JSON webhook call, retried."""

import hashlib
import hmac
import json
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from alerts.models import AlertDelivery, AlertEvent, AlertRule

# Waits before the second, third and fourth tries of a webhook call: a receiver restarting or
# briefly overloaded gets about 20 s to come back.
RETRY_DELAYS = (1, 4, 16)
WEBHOOK_TIMEOUT = 10


def signature(body: bytes, secret: str) -> str:
    """The X-Signature header: the receiver recomputes it with the shared secret to trust the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_alert(
    *, rule: AlertRule, events: list[AlertEvent], digest: bool = False, sleep: Callable[[float], None] = time.sleep
) -> list[AlertDelivery]:
    """Tell the rule's e-mail addresses and webhook about these events; record each delivery."""
    policy = rule.policy.name
    subject = events[0].subject if len(events) == 1 and not digest else f"{len(events)} alerts of policy {policy}"
    subject = f"[{settings.SITE_NAME}] {subject}"[:300]
    deliveries = []
    if rule.recipients:
        deliveries.append(_email(rule, subject, events, digest))
    if rule.webhook_url:
        payload = {"policy": policy, "digest": digest, "events": [e.as_json() for e in events]}
        deliveries.append(_webhook(rule, subject, payload, len(events), sleep))
    AlertEvent.objects.filter(pk__in=[e.pk for e in events]).update(sent=timezone.now())
    return deliveries


def _email(rule: AlertRule, subject: str, events: list[AlertEvent], digest: bool) -> AlertDelivery:
    lines = [f"Policy {rule.policy.name}:", ""]
    for event in events:
        lines.append(f"{timezone.localtime(event.time):%Y-%m-%d %H:%M %Z}  {event.subject}")
        lines.extend(f"    {key}: {value}" for key, value in event.details.items())
    error = ""
    try:
        send_mail(subject, "\n".join(lines) + "\n", None, rule.recipients)
    except (smtplib.SMTPException, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    return AlertDelivery.objects.create(
        rule=rule,
        channel=AlertDelivery.Channel.EMAIL,
        target=", ".join(rule.recipients),
        subject=subject,
        event_count=len(events),
        status=AlertDelivery.Status.FAILED if error else AlertDelivery.Status.SENT,
        error=error,
    )


def _webhook(rule: AlertRule, subject: str, payload: dict, count: int, sleep) -> AlertDelivery:
    body = json.dumps(payload, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": settings.SITE_NAME}
    if rule.webhook_secret:
        headers["X-Signature"] = signature(body, rule.webhook_secret)
    attempts, error = 0, ""
    for delay in (0, *RETRY_DELAYS):
        if delay:
            sleep(delay)
        attempts += 1
        error = post_once(rule.webhook_url, body, headers)
        if not error:
            break
    return AlertDelivery.objects.create(
        rule=rule,
        channel=AlertDelivery.Channel.WEBHOOK,
        target=rule.webhook_url,
        subject=subject,
        event_count=count,
        status=AlertDelivery.Status.FAILED if error else AlertDelivery.Status.SENT,
        attempts=attempts,
        error=error,
    )


def post_once(url: str, body: bytes, headers: dict) -> str:
    """POST the body; the error in words, or "" when the receiver answered 2xx."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read(1024)
    except urllib.error.HTTPError as e:
        return f"{url} answered HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url} could not be reached: {getattr(e, 'reason', e)}"
    return ""
