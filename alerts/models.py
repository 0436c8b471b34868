"""Alerts: what a policy's people are told (failed, damaged, skipped, RPO missed), how, and what was sent."""

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from alerts.validators import split_emails, validate_emails, validate_webhook_url
from core.crypto import EncryptedTextField

# The one rule of an RPO, said by the model, its form and the API alike.
RPO_AT_LEAST = "The RPO is at least 1 hour; leave it empty for no RPO alert."


class AlertRule(models.Model):
    """Where a policy's alerts go. A policy without one alerts nobody."""

    class Digest(models.TextChoices):
        IMMEDIATE = "immediate", "Each alert at once"
        DAILY = "daily", "One digest a day"

    policy = models.OneToOneField("policies.Policy", on_delete=models.CASCADE, related_name="alert_rule")
    emails = models.CharField(
        "e-mail addresses", max_length=1000, blank=True, validators=[validate_emails], help_text="Comma-separated."
    )
    webhook_url = models.CharField("webhook URL", max_length=500, blank=True, validators=[validate_webhook_url])
    webhook_secret = EncryptedTextField(
        blank=True, help_text="Signs each webhook body (X-Signature: sha256=HMAC); kept encrypted, never shown."
    )
    rpo_hours = models.PositiveIntegerField(
        "RPO (hours)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1, message=RPO_AT_LEAST)],
        help_text="Alert when a covered VM has no complete backup this recent (at least 1 hour); empty: no such alert.",
    )
    digest = models.CharField(max_length=10, choices=Digest.choices, default=Digest.IMMEDIATE)
    last_digest = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["policy__name"]

    def __str__(self) -> str:
        return f"alerts of {self.policy}"

    @property
    def recipients(self) -> list[str]:
        return split_emails(self.emails)


class AlertEventQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(sent=None)

    def for_list(self):
        """What the list of raised alerts shows of each, in a constant number of queries."""
        return self.select_related("rule__policy", "vm").prefetch_related("deliveries")


class AlertEvent(models.Model):
    """Something people were (or, for a daily digest, will be) told about."""

    class Kind(models.TextChoices):
        FAILED = "failed", "Job failed"
        DAMAGED = "damaged", "Backup damaged"
        SKIPPED = "skipped", "Skipped by the backup window"
        RPO = "rpo", "RPO missed"
        CHANGE_RATE = "change_rate", "Unusual change rate"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    time = models.DateTimeField(default=timezone.now)
    subject = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True, help_text="The figures: the error, the rates, the RPO...")
    vm = models.ForeignKey("inventory.VM", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # What it is about, for its link (the ids stay in `details`, as the webhook sent them).
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    point = models.ForeignKey(
        "repository.BackupPoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent = models.DateTimeField(null=True, blank=True, help_text="When it went out (alone or in a digest).")

    objects = AlertEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-pk"]
        indexes = [models.Index(fields=["kind", "time"], name="alert_event_kind_time")]

    def __str__(self) -> str:
        return self.subject

    @property
    def headline(self) -> str:
        """The subject without the kind it starts with, for a list that shows the kind beside it."""
        prefix = f"{self.get_kind_display()}: "
        return self.subject.removeprefix(prefix)

    @property
    def delivery_state(self) -> str:
        """How telling people went, in words (reads the prefetched deliveries)."""
        deliveries = list(self.deliveries.all())
        if deliveries:
            return "; ".join(d.outcome for d in sorted(deliveries, key=lambda d: d.channel))
        if self.sent is not None:
            return "No e-mail address or webhook to send it to"
        if self.rule.digest == AlertRule.Digest.DAILY:
            return "Waiting for the daily digest"
        return "Being sent"

    @property
    def delivery_failed(self) -> bool:
        return any(d.status == AlertDelivery.Status.FAILED for d in self.deliveries.all())

    def as_json(self) -> dict:
        return {"kind": self.kind, "time": self.time.isoformat(), "subject": self.subject, "details": self.details}


class AlertDelivery(models.Model):
    """One e-mail or webhook call, with how it went."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="deliveries")
    events = models.ManyToManyField(AlertEvent, blank=True, related_name="deliveries")
    test = models.BooleanField(default=False, help_text="A test message sent from the alerts page.")
    time = models.DateTimeField(default=timezone.now)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=1000, help_text="The addresses or the URL.")
    subject = models.CharField(max_length=300)
    event_count = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices)
    attempts = models.PositiveIntegerField(default=1)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-time", "-pk"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.channel} {self.status}: {self.subject}"

    @property
    def outcome(self) -> str:
        """ "E-mail sent", "Webhook sent after 3 tries", "E-mail failed: The mail server ... refused the connection"."""
        text = f"{self.get_channel_display()} {self.get_status_display().lower()}"
        if self.attempts > 1:
            text += f" after {self.attempts} tries"
        return f"{text}: {self.error}" if self.error else text


def webhook_shown(url: str, *, may_edit: bool) -> str:
    """A webhook URL as a reader may see it. Its path and query are often its only credential (a chat
    service's incoming hook), so those who may not edit the rule see its scheme and host alone."""
    if may_edit or not url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}/…"
