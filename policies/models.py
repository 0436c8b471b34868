"""Policies: which VMs are backed up, how, when, where, and kept how long."""

from datetime import datetime

from croniter import croniter
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from core.crypto import EncryptedTextField
from policies.validators import validate_cron, validate_regex, validate_string_list
from strategies.registry import default_strategy_name, strategy_choices


class Policy(models.Model):
    """A schedule and a set of rules deciding which VMs are backed up, how, and kept how long."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first when jobs compete for slots.")
    strategy = models.CharField(max_length=30, choices=strategy_choices, default=default_strategy_name)
    destination = models.ForeignKey("repository.BackupDestination", on_delete=models.PROTECT, related_name="policies")
    schedule = models.CharField(max_length=100, default="0 1 * * *", validators=[validate_cron], help_text="cron")
    full_every_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(0)],
        help_text="Take a full backup when the last full is this many days old; 0 means always full.",
    )
    max_chain_length = models.PositiveIntegerField(
        default=14, validators=[MinValueValidator(1)], help_text="Incrementals on one full before a new full."
    )
    keep_last = models.PositiveIntegerField(default=7, help_text="Always keep this many newest good points.")
    keep_days = models.PositiveIntegerField(default=0, help_text="Keep points younger than this; 0 disables.")
    keep_daily = models.PositiveIntegerField(default=0)
    keep_weekly = models.PositiveIntegerField(default=0)
    keep_monthly = models.PositiveIntegerField(default=0)
    quiesce = models.BooleanField(default=True, help_text="Freeze guest filesystems through the guest agent.")
    pre_snapshot_command = models.TextField(blank=True, help_text="Run in the guest over SSH before the snapshot.")
    post_snapshot_command = models.TextField(blank=True, help_text="Run in the guest over SSH after the snapshot.")
    guest_ssh_user = models.CharField("guest SSH user", max_length=100, default="root")
    guest_ssh_port = models.PositiveIntegerField(
        "guest SSH port", default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    guest_ssh_private_key = EncryptedTextField(
        "guest SSH private key", blank=True, help_text="For the pre/post snapshot commands; kept encrypted."
    )
    guest_command_timeout = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1)], help_text="Seconds a pre/post snapshot command may run."
    )
    excluded_disks = models.JSONField(
        default=list, blank=True, validators=[validate_string_list], help_text="Disk aliases or IDs never backed up."
    )
    vms = models.ManyToManyField("inventory.VM", blank=True, related_name="policies")
    match_name_regex = models.CharField(
        "VM name regex", max_length=200, blank=True, validators=[validate_regex], help_text="Auto-assign matching VMs."
    )
    match_tag = models.CharField("VM tag", max_length=100, blank=True)
    match_cluster = models.ForeignKey(
        "inventory.Cluster", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    parallel_vms = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1), MaxValueValidator(64)])
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["priority", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def next_run(self, after: datetime | None = None) -> datetime:
        return croniter(self.schedule, after or timezone.now()).get_next(datetime)

    @property
    def incremental(self) -> bool:
        return self.full_every_days != 0
