"""Jobs: every long operation, its status, progress and log lines; the slots a running job holds."""

import logging

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from core import roles
from core.formats import duration, iec
from jobs import shutdown, signals
from jobs.errors import IllegalTransition, JobCancelled, JobError, SlotTaken

log = logging.getLogger("jobs")


class JobQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=Job.ACTIVE)

    def abandoned(self, timeout_seconds: int):
        """Running jobs whose worker stopped beating (killed, crashed, or its node lost)."""
        cutoff = timezone.now() - timezone.timedelta(seconds=timeout_seconds)
        return self.filter(status=Job.Status.RUNNING, heartbeat__lt=cutoff)

    def running(self):
        return self.filter(status=Job.Status.RUNNING)

    def queued(self):
        return self.filter(status=Job.Status.QUEUED)

    def past_deadline(self, now):
        """Queued jobs whose `not_after` has passed: they are skipped, never started late."""
        return self.queued().filter(not_after__lt=now)

    def waiting(self):
        """Queued jobs a worker put aside because a concurrency limit was reached: no task holds them."""
        return self.queued().filter(dispatched=None).exclude(waiting_for="")

    def undispatched(self, grace_seconds: int):
        """Queued jobs whose last task went to the broker more than `grace_seconds` ago (or that were
        created that long ago and never handed over): either still waiting their turn in the
        broker, or lost with a worker that took the task."""
        cutoff = timezone.now() - timezone.timedelta(seconds=grace_seconds)
        return self.queued().filter(models.Q(dispatched__lt=cutoff) | models.Q(dispatched=None, created__lt=cutoff))

    def started_by(self, obj: models.Model):
        """The jobs `obj` started (Job.started_by), newest first."""
        return self.filter(started_by_type=ContentType.objects.get_for_model(obj), started_by_id=obj.pk)

    def create_unless_active(self, *, exclusive: str, **fields) -> tuple["Job", bool]:
        """Create a job, or return the active one holding the same `exclusive` key (the unique
        constraint job_one_active_per_key): (job, created). The key names what two jobs must not
        work on at once, e.g. "sync:manager:3" (its app chooses it).

        The active job that refused this one may end before it is read (a quick sync); then this
        one is tried again, so concurrent requests never see the constraint as an error."""
        for _ in range(3):
            try:
                with transaction.atomic():
                    return self.create(exclusive=exclusive, **fields), True
            except IntegrityError:
                active = self.active().filter(exclusive=exclusive).first()
                if active is not None:
                    return active, False
        kind = fields.get("kind", "")
        raise JobError(
            f"No {kind.replace('_', ' ')} job could be queued: another started and ended each time, "
            "or what it works on was removed. Ask again."
        )


class Job(models.Model):
    """Every long operation. Its row is the truth; the task queue only carries its id.

    Status moves only along TRANSITIONS, each move a conditional UPDATE so two workers (or a
    worker and a cancel) cannot both win.

    Its kind is a name an app above registers with its handler (jobs.kinds), never listed here; what
    started it (a policy) is a generic reference, as NetBox's Job points at its object.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # Not started by its deadline (a policy's backup window ended): never ran, with the reason.
        SKIPPED = "skipped", "Skipped"

    class Origin(models.TextChoices):
        PAGE = "page", "Page"
        API = "api", "API"
        CLI = "cli", "Command line"
        SCHEDULE = "schedule", "Schedule"

    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED, Status.SKIPPED},
        # Back to the queue: its worker was stopped, and the job's cleanup ran.
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
        Status.SKIPPED: set(),
    }
    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINAL = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SKIPPED}

    # A kind its app registered (jobs.kinds.register_handler): "backup", "sync", ...
    kind = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    name = models.CharField(max_length=200, blank=True, help_text="What it works on, for people.")
    manager = models.ForeignKey("inventory.Manager", null=True, blank=True, on_delete=models.SET_NULL)
    vm = models.ForeignKey("inventory.VM", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    # What started it, whatever its app: the policy whose schedule or settings it runs under. Cleared
    # by that app when the object is deleted (a generic reference has no ON DELETE of its own).
    started_by_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_by_id = models.PositiveBigIntegerField(null=True, blank=True)
    started_by = GenericForeignKey("started_by_type", "started_by_id")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Where the request came from; empty for jobs queued before it was recorded.
    origin = models.CharField(max_length=10, choices=Origin.choices, blank=True)
    # What no two active jobs may share ("backup:vm:12"): its app names it; empty for most jobs.
    exclusive = models.CharField(max_length=100, blank=True)
    # Jobs asked for together, and those they queued in turn (a policy run's backups and the retention
    # each queues after it): the app that asked keeps the id, and the group ends when none is active.
    group = models.UUIDField(null=True, blank=True, db_index=True)
    # A job not started by then is skipped (the end of its policy's backup window), with `skip_reason`.
    not_after = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=300, blank=True)
    node = models.CharField(max_length=100, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # When its task was last handed to the task broker: the reaper queues a job again whose task
    # is neither in the broker nor run by any worker (taken by a worker that died).
    dispatched = models.DateTimeField(null=True, blank=True)
    # Why a worker put this queued job aside (a concurrency limit): it has no task until a job ends.
    waiting_for = models.CharField(max_length=200, blank=True)
    # The node whose queue its task was last sent to (placement); `node` is the one that ran it.
    sent_to = models.CharField(max_length=100, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["status", "kind"]),
            models.Index(fields=["started_by_type", "started_by_id"], name="job_started_by"),
        ]
        constraints = [
            # Two jobs with one key never run at once (two syncs of one manager, overlapping backups of
            # one VM racing for its snapshots): the database refuses the second.
            models.UniqueConstraint(
                fields=["exclusive"],
                condition=models.Q(status__in=["queued", "running"]) & ~models.Q(exclusive=""),
                name="job_one_active_per_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind_label} #{self.pk}"

    def save(self, *args, **kwargs) -> None:
        limit = self._meta.get_field("name").max_length
        if len(self.name) > limit:  # a VM name and a restore target together can be longer
            self.name = self.name[: limit - 1] + "…"
        super().save(*args, **kwargs)

    @property
    def kind_label(self) -> str:
        """What people call its kind, as the app owning the kind registered it (jobs.kinds)."""
        from jobs.kinds import kind_label

        return kind_label(self.kind)

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def throughput(self) -> float | None:
        """Bytes per second since the job started (None before it moved any)."""
        if not self.started or not self.bytes_done:
            return None
        end = self.finished or timezone.now()
        seconds = (end - self.started).total_seconds()
        return self.bytes_done / seconds if seconds > 0 else None

    @property
    def eta_seconds(self) -> int | None:
        """Seconds left at the current throughput, for a running job."""
        rate = self.throughput
        if self.status != self.Status.RUNNING or not rate or not self.bytes_total:
            return None
        return max(0, int((self.bytes_total - self.bytes_done) / rate))

    @property
    def progress_percent(self) -> float | None:
        if not self.bytes_total:
            return None
        return min(100.0, round(100 * self.bytes_done / self.bytes_total, 1))

    @property
    def progress_text(self) -> str:
        """The progress as people read it, the same on the page, in the CLI and in the API:
        "1.2 GiB of 8.0 GiB (15.0%), 410.3 MiB/s, 2 min 10 s left"; "" before a total is known."""
        if not self.bytes_total:
            return ""
        text = f"{iec(self.bytes_done)} of {iec(self.bytes_total)} ({self.progress_percent}%)"
        if self.throughput:
            text += f", {iec(self.throughput)}/s"
        if self.eta_seconds is not None:
            text += f", {duration(self.eta_seconds)} left"
        return text

    def _move(self, to: str, **fields) -> None:
        allowed_from = [s for s, targets in self.TRANSITIONS.items() if to in targets]
        now = timezone.now()
        if to == self.Status.RUNNING:
            fields.setdefault("started", now)
            fields.setdefault("heartbeat", now)
        if to in self.FINAL:
            fields.setdefault("finished", now)
        updated = Job.objects.filter(pk=self.pk, status__in=allowed_from).update(status=to, **fields)
        if not updated:
            current = Job.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            raise IllegalTransition(f"job {self.pk} cannot move from {current} to {to}")
        self.status = to
        for name, value in fields.items():
            setattr(self, name, value)
        if to != self.Status.RUNNING:
            # Its slots are free once it no longer runs (counts look at running jobs only anyway).
            JobSlot.objects.filter(job_id=self.pk).delete()
        if to in self.FINAL:
            # A listener's failure (an alert that cannot be queued) must not undo the job's end.
            for receiver, error in signals.job_finished.send_robust(sender=Job, job=self, status=to):
                if isinstance(error, Exception):
                    log.error("job %s: %s failed on its end: %r", self.pk, receiver, error, exc_info=error)

    def start(self, *, node: str = "", slots: list[dict] | None = None) -> None:
        """Claim a queued job with the slots it needs (by default those its kind declares, jobs.kinds),
        in one transaction that counts each slot's holders and takes the job only if every slot has
        room: two workers never both take a slot's last place. Raises IllegalTransition when another
        worker got the job first, SlotTaken naming the limit when a slot is full (it stays queued)."""
        from jobs.kinds import slots_for

        node = node or settings.NODE_NAME
        slots = slots_for(self, node=node) if slots is None else slots
        keys = sorted({slot["key"] for slot in slots})
        if keys:
            # A row per key to lock, made outside the claim (committed at once, whoever makes it).
            Slot.objects.bulk_create([Slot(key=key) for key in keys], ignore_conflicts=True)
        with transaction.atomic():  # on SQLite it begins as a write (IMMEDIATE): claims are serialized
            if keys:
                # In key order, so that two claims sharing keys queue up instead of deadlocking.
                list(Slot.objects.select_for_update().filter(key__in=keys).order_by("key").values_list("pk"))
                # The job's row waits rather than skips (SKIP LOCKED) a lock held elsewhere: the lock may
                # be a dispatch's, whose transaction is still open while a worker already has the task
                # (Redis); a second claim of the job finds it running once the first commits.
                claimed = Job.objects.select_for_update().filter(pk=self.pk, status=self.Status.QUEUED)
                if not claimed.values_list("pk").first():
                    current = Job.objects.filter(pk=self.pk).values_list("status", flat=True).first()
                    raise IllegalTransition(f"job {self.pk} cannot move from {current} to running (claimed elsewhere)")
                if full := JobSlot.objects.full(slots, besides=self.pk):
                    raise SlotTaken(full)
                JobSlot.objects.bulk_create([JobSlot(job_id=self.pk, key=key) for key in keys], ignore_conflicts=True)
            self._move(self.Status.RUNNING, node=node, waiting_for="")
        self.log("info", f"Started on {self.node}")

    def succeed(self, *, result: dict | None = None) -> None:
        self._move(self.Status.SUCCEEDED, result=result if result is not None else self.result)
        self.log("info", "Succeeded")

    def fail(self, error: str) -> None:
        self._move(self.Status.FAILED, error=error)
        self.log("error", error)

    def requeue(self, reason: str) -> None:
        """A running job whose worker was stopped goes back to the queue, to start again from the
        beginning; its cleanup has run, so nothing of this attempt is left."""
        self._move(
            self.Status.QUEUED,
            started=None,
            heartbeat=None,
            node="",
            bytes_done=0,
            bytes_total=0,
            dispatched=None,
            result={k: v for k, v in self.result.items() if k != "engine_objects"},
        )
        self.log("warning", reason)

    def skip(self, reason: str) -> None:
        """A queued job that must not start any more: final, with the reason in its error."""
        self._move(self.Status.SKIPPED, error=reason)
        self.log("warning", f"Skipped: {reason}")

    def mark_cancelled(self) -> None:
        self._move(self.Status.CANCELLED)
        self.log("warning", "Cancelled")

    def request_cancel(self) -> None:
        """Ask a running job to stop at its next check; a queued job is cancelled at once."""
        with transaction.atomic():
            Job.objects.filter(pk=self.pk).update(cancel_requested=True)
            self.cancel_requested = True
            if self.status == self.Status.QUEUED:
                try:
                    self.mark_cancelled()
                except IllegalTransition:
                    self.refresh_from_db()

    def cancel_is_requested(self) -> bool:
        """Someone asked this job to stop, or the worker running it is being stopped."""
        return shutdown.stop_requested() or Job.objects.filter(pk=self.pk, cancel_requested=True).exists()

    def beat(self) -> None:
        """Tell the reaper this job's worker is alive (a long wait that must not be cancelled)."""
        Job.objects.filter(pk=self.pk).update(heartbeat=timezone.now())

    def check_cancel(self) -> None:
        """Beat the heartbeat, and raise JobCancelled when someone asked this job to stop."""
        self.beat()
        if self.cancel_is_requested():
            raise JobCancelled()

    def set_progress(self, done: int, total: int | None = None) -> None:
        """Record bytes done (and total); also the heartbeat that tells the job is alive."""
        fields = {"bytes_done": done, "heartbeat": timezone.now()}
        if total is not None:
            fields["bytes_total"] = total
        Job.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)

    def remember_engine_object(self, kind: str, engine_id: str, **details) -> None:
        """Record something this job made or changed on the engine, so that if its worker dies the
        reaper can undo it (`result["engine_objects"]`, newest last)."""
        self.result = {
            **self.result,
            "engine_objects": [*self.engine_objects, {"kind": kind, "id": engine_id, **details}],
        }
        Job.objects.filter(pk=self.pk).update(result=self.result)

    def forget_engine_object(self, engine_id: str, *, kind: str = "") -> None:
        """One recorded object is gone, or is now meant to stay (a snapshot kept as a backup's base).
        Called only once the engine confirmed it: a failed undo keeps the record, for the reaper.
        `kind` keeps the other records of the same id (a disk made, and its attachment to a proxy)."""
        kept = [o for o in self.engine_objects if o["id"] != engine_id or (kind and o["kind"] != kind)]
        if len(kept) == len(self.engine_objects):
            return  # not this job's record (an older backup's base being retired)
        # No key once nothing is recorded: the reaper looks for ended jobs that still have one.
        self.result = {k: v for k, v in self.result.items() if k != "engine_objects"}
        if kept:
            self.result["engine_objects"] = kept
        Job.objects.filter(pk=self.pk).update(result=self.result)

    def forget_engine_objects(self) -> None:
        """What was recorded is now meant to stay (the work succeeded)."""
        self.result = {k: v for k, v in self.result.items() if k != "engine_objects"}
        Job.objects.filter(pk=self.pk).update(result=self.result)

    def add_to_error(self, text: str) -> None:
        """Append a sentence to a failed job's error (what the reaper undid after it failed)."""
        self.error = f"{self.error} {text}".strip()
        Job.objects.filter(pk=self.pk).update(error=self.error)

    @property
    def engine_objects(self) -> list[dict]:
        return list(self.result.get("engine_objects", []))

    def log(self, level: str, message: str) -> "JobEvent":
        return JobEvent.objects.create(job_id=self.pk, level=level, message=message)


class JobEventQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Debug lines (tracebacks) are for admins: they may show paths, hosts and internals."""
        return self if roles.role_of(user) == roles.ADMIN else self.exclude(level=JobEvent.Level.DEBUG)


class JobEvent(models.Model):
    """One log line of a job."""

    class Level(models.TextChoices):
        DEBUG = "debug", "Debug"
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    time = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    message = models.TextField()

    objects = JobEventQuerySet.as_manager()

    class Meta:
        ordering = ["time", "pk"]

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S} {self.level} {self.message}"


class Slot(models.Model):
    """A limited resource running jobs hold (jobs.kinds): one row per key, locked by every claim
    that counts its holders, so that claims of one slot on any node take turns."""

    key = models.CharField(max_length=200, unique=True)

    def __str__(self) -> str:
        return self.key


class JobSlotQuerySet(models.QuerySet):
    def held(self):
        """Holdings of running jobs: a job's end frees its slots even before its rows are deleted."""
        return self.filter(job__status=Job.Status.RUNNING)

    def full(self, slots: list[dict], *, besides: int | None = None) -> str:
        """Which of these slots has no room now, as people read it ("" when every one has room)."""
        if not slots:
            return ""
        holders = self.held().filter(key__in={slot["key"] for slot in slots}).exclude(job_id=besides)
        counts = dict(holders.order_by().values("key").annotate(n=models.Count("pk")).values_list("key", "n"))
        for slot in slots:
            if counts.get(slot["key"], 0) >= slot["limit"]:
                return f"{slot['limit']} {slot['label']}"
        return ""


class JobSlot(models.Model):
    """A slot a running job holds: written in the transaction that starts it, deleted as it stops."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="held_slots")
    key = models.CharField(max_length=200, db_index=True)

    objects = JobSlotQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "key"], name="jobslot_one_per_job_and_key")]

    def __str__(self) -> str:
        return f"{self.key} held by job {self.job_id}"
