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
        lines = [f"Policy {rule.policy.name}:", ""]
        for event in events:
            lines.append(f"{timezone.localtime(event.time):%Y-%m-%d %H:%M %Z}  {event.subject}")
            lines.extend(f"    {key}: {value}" for key, value in event.details.items())
        deliveries.append(_email(rule, subject, "\n".join(lines) + "\n", count=len(events)))
    if rule.webhook_url:
        payload = {"policy": policy, "digest": digest, "events": [e.as_json() for e in events]}
        deliveries.append(_webhook(rule, subject, payload, len(events), sleep))
    for delivery in deliveries:
        delivery.events.set(events)
    AlertEvent.objects.filter(pk__in=[e.pk for e in events]).update(sent=timezone.now())
    return deliveries


def send_test(*, rule: AlertRule, channel: str, who: str = "") -> AlertDelivery:
    """A test message through the channel's real delivery code (one try: someone waits for the page),
    recorded like any delivery. ValueError when the rule has no such channel."""
    policy = rule.policy.name
    subject = f"[{settings.SITE_NAME}] Test message of the alerts of policy {policy}"
    by = f" by {who}" if who else ""
    if channel == AlertDelivery.Channel.EMAIL:
        if not rule.recipients:
            raise ValueError(f"Policy {policy} has no e-mail address to send a test to.")
        body = (
            f"This is a test message{by}, from the Alerts page of {settings.SITE_NAME}.\n"
            f"The alerts of policy {policy} will reach you this way.\n"
        )
        return _email(rule, subject, body, count=0, test=True)
    if channel == AlertDelivery.Channel.WEBHOOK:
        if not rule.webhook_url:
            raise ValueError(f"Policy {policy} has no webhook to send a test to.")
        payload = {"policy": policy, "digest": False, "test": True, "events": []}
        return _webhook(rule, subject, payload, 0, time.sleep, delays=(), test=True)
    raise ValueError(f"There is no alert channel {channel!r}.")


def _host_port(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def unreachable_in_words(e: OSError, *, what: str, host: str, port: int | None, timeout: float | None) -> str:
    """Why a server could not be talked to, in words: "The mail server 127.0.0.1:2525 refused the
    connection", not an errno."""
    where = f"{what} {_host_port(host, port)}"
    if isinstance(e, ConnectionRefusedError):
        return f"{where} refused the connection"
    if isinstance(e, TimeoutError):
        return f"{where} did not answer within {timeout:g} s" if timeout else f"{where} did not answer in time"
    if isinstance(e, socket.gaierror):
        return f"{where} could not be found: the name {host} does not resolve"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"{where} showed a TLS certificate that is not trusted: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS with {what.lower()} {_host_port(host, port)} failed: {e.reason or e}"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return f"{where} closed the connection"
    return f"{where} could not be reached: {e.strerror or e}"


def _smtp_text(message) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def mail_error_in_words(e: Exception) -> str:
    """An SMTP failure as people read it, naming the server of the EMAIL_* settings."""
    host, port = settings.EMAIL_HOST, settings.EMAIL_PORT
    where = f"The mail server {_host_port(host, port)}"
    if isinstance(e, smtplib.SMTPAuthenticationError):
        user = settings.EMAIL_HOST_USER
        return f"{where} refused the login of {user or 'the configured user'}: {e.smtp_code} {_smtp_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{to} ({code} {_smtp_text(msg)})" for to, (code, msg) in e.recipients.items())
        return f"{where} refused the recipients {refused}"
    if isinstance(e, smtplib.SMTPSenderRefused):
        return f"{where} refused the sender {e.sender}: {e.smtp_code} {_smtp_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection before the message was sent"
    if isinstance(e, smtplib.SMTPResponseException):
        return f"{where} answered {e.smtp_code} {_smtp_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return f"{where} does not offer what the EMAIL_* settings ask for: {e}"
    if isinstance(e, OSError):
        return unreachable_in_words(e, what="The mail server", host=host, port=port, timeout=settings.EMAIL_TIMEOUT)
    return f"{where} failed: {e}"


def _email(rule: AlertRule, subject: str, body: str, *, count: int, test: bool = False) -> AlertDelivery:
    error = ""
    try:
        send_mail(subject, body, None, rule.recipients)
    except (smtplib.SMTPException, OSError) as e:
        error = mail_error_in_words(e)
    return AlertDelivery.objects.create(
        rule=rule,
        channel=AlertDelivery.Channel.EMAIL,
        target=", ".join(rule.recipients),
        subject=subject,
        event_count=count,
        test=test,
        status=AlertDelivery.Status.FAILED if error else AlertDelivery.Status.SENT,
        error=error,
    )


def _webhook(
    rule: AlertRule, subject: str, payload: dict, count: int, sleep, *, delays=RETRY_DELAYS, test: bool = False
) -> AlertDelivery:
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
        for delay in (0, *delays):
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
        test=test,
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
        words = {
            "what": "The webhook receiver",
            "host": parts.hostname,
            "port": connection.port,
            "timeout": WEBHOOK_TIMEOUT,
        }
        try:
            connection.connect()
        except OSError as e:
            error = unreachable_in_words(e, **words)
            connection.close()
            continue  # the next address of the host, as a browser would
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(1024)
        except OSError as e:
            return unreachable_in_words(e, **words)
        except http.client.HTTPException as e:
            return (
                f"The webhook receiver {_host_port(parts.hostname, connection.port)} gave no valid HTTP answer ({e!r})"
            )
        finally:
            connection.close()
        if 300 <= response.status < 400:
            return f"{url} answered HTTP {response.status} {response.reason}; redirects are not followed"
        if not 200 <= response.status < 300:
            return f"{url} answered HTTP {response.status} {response.reason}"
        return ""
    return error
