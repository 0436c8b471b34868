"""Policies: which VMs are backed up, how, when, where, and kept how long."""

import uuid
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.crypto import EncryptedTextField
from jobs.models import Job
from policies import cron
from policies.validators import (
    proof_problems,
    schedule_window_problems,
    validate_cron,
    validate_regex,
    validate_string_list,
    window_problems,
)
from strategies.registry import default_strategy_name, strategy_choices


class Policy(models.Model):
    """A schedule and a set of rules deciding which VMs are backed up, how, and kept how long."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first when jobs compete for slots.")
    strategy = models.CharField(max_length=30, choices=strategy_choices, default=default_strategy_name)
    # The strategy's own options for this policy's backups, as the strategy declares them (checked by
    # the form and the API against Strategy.options; the backups' request_backup checks them again).
    strategy_options = models.JSONField(default=dict, blank=True, help_text="The strategy's own options by name.")
    destination = models.ForeignKey("repository.BackupDestination", on_delete=models.PROTECT, related_name="policies")
    schedule = models.CharField(max_length=100, default="0 1 * * *", validators=[validate_cron], help_text="cron")
    full_every_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(0)],
        help_text="Take a full backup when the last full is this many days old; 0 means always full.",
    )
    full_every_runs = models.PositiveIntegerField(
        default=0, help_text="Take a full backup every Nth scheduled run (the first run is full); 0 disables."
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
    exclude_name_regex = models.CharField(
        "exclude VM name regex",
        max_length=200,
        blank=True,
        validators=[validate_regex],
        help_text="VMs whose name matches are not auto-assigned (VMs listed explicitly still are).",
    )
    exclude_tag = models.CharField(
        "exclude VM tag", max_length=100, blank=True, help_text="VMs with this tag are not auto-assigned."
    )
    window_start = models.TimeField(
        null=True, blank=True, help_text="Backup window start (site time); jobs not started by its end are skipped."
    )
    window_end = models.TimeField(null=True, blank=True, help_text="Backup window end; may be after midnight.")
    verify_after_backup = models.BooleanField(default=False, help_text="Verify the new backups after each run.")
    verify_weekly = models.BooleanField(default=False, help_text="Verify every kept backup of this policy weekly.")
    weekly_verified = models.DateTimeField(null=True, blank=True, editable=False)
    # Judged by alerts.change_rate after each backup of the policy: a VM whose latest incremental
    # shows its disks changing this many times faster than its own usual is flagged and alerted.
    change_rate_factor = models.DecimalField(
        "unusual change rate (times the usual)",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        default=Decimal(5),
        validators=[MinValueValidator(Decimal("1.5"))],
        help_text="Flag and alert when a VM's disks change this many times faster than usual (the median of its "
        "last 10 incrementals), as when ransomware encrypts them or a log runs away. Example: 5. "
        "Empty: never.",
    )
    # Restore proofs (policies.proofs): at the proof schedule, the newest complete backup of each VM
    # the policy covers is booted without network, one VM after another, and discarded.
    prove_restores = models.BooleanField(
        default=False,
        help_text="At the proof schedule, boot the newest backup of each VM it covers by instant restore, "
        "without network, wait for it to be up (and for its guest agent), record that, and discard it.",
    )
    proof_schedule = models.CharField(
        max_length=100,
        default="0 6 * * *",
        validators=[validate_cron],
        help_text="cron, site time: when the proofs start (after the backups); one VM is proved at a time.",
    )
    proof_cluster = models.CharField(
        max_length=255,
        blank=True,
        help_text="The cluster the proofs boot in (the booted VMs have no network); empty: each VM's own cluster.",
    )
    # The proof schedule's time the last round was started for, and the VMs of that round still to
    # prove, in order (ids): the ticker queues the next one when the policy's proof before it ended.
    proofs_due = models.DateTimeField(null=True, blank=True, editable=False)
    proofs_pending = models.JSONField(default=list, blank=True, editable=False)
    parallel_vms = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1), MaxValueValidator(64)])
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["priority", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("policy-detail", args=[self.pk])

    def clean(self) -> None:
        problems = window_problems(self.window_start, self.window_end)
        problems |= schedule_window_problems(self.schedule, self.window_start, self.window_end)
        problems |= proof_problems(
            prove_restores=self.prove_restores,
            proof_schedule=self.proof_schedule,
            proof_cluster=self.proof_cluster,
            schedule=self.schedule,
        )
        if problems:
            raise ValidationError(problems)

    def next_run(self, after: datetime | None = None) -> datetime:
        """The next cron time after `after` (now), read in the site's time zone; across a change
        of the clocks as policies.cron says."""
        return cron.next_time(self.schedule, after=after or timezone.now(), tz=timezone.get_current_timezone())

    def last_due(self, now: datetime) -> datetime:
        """The latest cron time at or before `now`, in the site's time zone."""
        return cron.last_time(self.schedule, now=now, tz=timezone.get_current_timezone())

    def window_end_after(self, moment: datetime) -> datetime | None:
        """The end of the backup window `moment` falls in (site time); None without a window or
        outside it. What the scheduler judges a due run by (policies.cron.window_end_after)."""
        if self.window_start is None or self.window_end is None:
            return None
        return cron.window_end_after(
            moment, start=self.window_start, end=self.window_end, tz=timezone.get_current_timezone()
        )

    def last_proof_due(self, now: datetime) -> datetime:
        """The latest time of the proof schedule at or before `now`, in the site's time zone."""
        return cron.last_time(self.proof_schedule, now=now, tz=timezone.get_current_timezone())

    def next_proofs(self, after: datetime | None = None) -> datetime:
        return cron.next_time(self.proof_schedule, after=after or timezone.now(), tz=timezone.get_current_timezone())

    @property
    def window_text(self) -> str:
        if self.window_start is None or self.window_end is None:
            return ""
        return f"{self.window_start:%H:%M} to {self.window_end:%H:%M}"

    @property
    def incremental(self) -> bool:
        return self.full_every_days != 0


class PolicyRun(models.Model):
    """One run of a policy: when it was due, who or what started it, and the backup jobs it queued."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField(
        help_text="1 for the policy's first run; the full/incremental rhythm counts it."
    )
    due = models.DateTimeField(help_text="The cron time it ran for, or when it was asked for.")
    started = models.DateTimeField(default=timezone.now)
    origin = models.CharField(max_length=10, default="schedule", help_text="page, api, cli or schedule")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True, help_text="Why it queued nothing, or less than it covers.")
    # Set by the ticker once no job of the run is active.
    finished = models.DateTimeField(null=True, blank=True)
    verify_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The group of the jobs it queued (Job.group): its backups and the retention each queued after
    # it. The run ends when none of them is active.
    job_group = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["-due", "-pk"]
        constraints = [
            # Two tickers (or a ticker delivered twice) never run one cron time twice.
            models.UniqueConstraint(
                fields=["policy", "due"], condition=models.Q(origin="schedule"), name="policyrun_one_per_cron_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy} run {self.number}"

    @property
    def jobs(self) -> models.QuerySet[Job]:
        return Job.objects.filter(group=self.job_group)


def policy_of(job) -> Policy | None:
    """The policy a job runs under: what started it (Job.started_by), when that is a policy."""
    started_by = job.started_by if job.started_by_type_id else None
    return started_by if isinstance(started_by, Policy) else None


def forget_deleted_policy(sender, instance: Policy, **kwargs) -> None:
    """A deleted policy's jobs stay, started by nothing any more (a generic reference has no ON DELETE:
    left alone, a later policy given the same id would seem to have started them)."""
    Job.objects.started_by(instance).update(started_by_type=None, started_by_id=None)


models.signals.post_delete.connect(forget_deleted_policy, sender=Policy, dispatch_uid="forget_deleted_policy")
