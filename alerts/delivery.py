"""Sending alerts: one e-mail (Django's mail settings) and one signed JSON webhook call, retried."""

import hashlib
import hmac
import http.client
import json
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from alerts.models import AlertDelivery, AlertEvent, AlertRule
from alerts.validators import WebhookTargetRefused, webhook_addresses

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
    try:
        # Checked again at each send: the row may have been changed behind the form's back, or the
        # name may resolve elsewhere now. A refused host is not retried: it will not change in 20 s.
        webhook_addresses(rule.webhook_url)
    except WebhookTargetRefused as e:
        error = f"Not sent: {e}"
    else:
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one address checked beforehand, whatever the host name resolves to by now;
    the Host header (and for HTTPS the SNI and the certificate check) keep the URL's host name."""

    address = ""

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection, _PinnedHTTPConnection):
    pass  # HTTPSConnection.connect wraps the socket _PinnedHTTPConnection.connect opened


def post_once(url: str, body: bytes, headers: dict) -> str:
    """POST the body to the URL's host at one of the addresses checked for it; the error in words,
    or "" when the receiver answered 2xx. Redirects are not followed: they could lead anywhere."""
    try:
        addresses = webhook_addresses(url)
    except WebhookTargetRefused as e:
        return f"Not sent: {e}"
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    error = ""
    for address in addresses:
        if parts.scheme == "https":
            connection = _PinnedHTTPSConnection(
                parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            connection = _PinnedHTTPConnection(parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT)
        connection.address = address
        try:
            connection.connect()
        except OSError as e:
            error = f"{url} could not be reached: {e.strerror or e}"
            connection.close()
            continue  # the next address of the host, as a browser would
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(1024)
        except (http.client.HTTPException, OSError) as e:
            return f"{url} could not be reached: {getattr(e, 'strerror', None) or e}"
        finally:
            connection.close()
        if 300 <= response.status < 400:
            return f"{url} answered HTTP {response.status} {response.reason}; redirects are not followed"
        if not 200 <= response.status < 300:
            return f"{url} answered HTTP {response.status} {response.reason}"
        return ""
    return error
