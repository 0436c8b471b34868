from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class FileSessionQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=[FileSession.Status.OPENING, FileSession.Status.OPEN])

    def here(self):
        return self.filter(node=settings.NODE_NAME)

    def idle(self, cutoff=None):
        """Open sessions nobody used since `cutoff` (FILES_IDLE_TIMEOUT ago by default)."""
        cutoff = cutoff or timezone.now() - timedelta(seconds=settings.FILES_IDLE_TIMEOUT)
        return self.open().filter(last_used__lt=cutoff)


class FileSession(models.Model):
    """A backup point opened read-only on a node for its files to be browsed, downloaded or put back
    into the VM (recovery.files). While it is open its chain is claimed (retention keeps it); when it
    closes (asked, idle, the node restarting) nothing of it stays on the node."""

    class Status(models.TextChoices):
        OPENING = "opening", "Opening"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        FAILED = "failed", "Failed"

    point = models.ForeignKey(
        "repository.BackupPoint", null=True, on_delete=models.SET_NULL, related_name="file_sessions"
    )
    node = models.CharField(max_length=100, help_text="The node whose processes hold the point open.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPENING)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    who = models.CharField(max_length=200, help_text="Who opened it, in words (a user, the command line).")
    origin = models.CharField(max_length=10, default="page")
    opened = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(default=timezone.now)
    closed = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    workdir = models.CharField(max_length=500, blank=True)
    claim = models.UUIDField(null=True, blank=True, help_text="The token of its claim on the point's chain.")
    disks = models.JSONField(
        default=list, blank=True, help_text="What opening found on each disk: its filesystems or its problem."
    )

    objects = FileSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-opened"]

    def __str__(self) -> str:
        return f"browsing session {self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.OPENING, self.Status.OPEN)

    @property
    def closes_at(self):
        return self.last_used + timedelta(seconds=settings.FILES_IDLE_TIMEOUT) if self.is_open else self.closed

    def disk(self, ref: str | None) -> dict:
        """The disk named by alias or engine id; the first (the boot disk comes first) when none."""
        from recovery.files.errors import FilesError

        if not self.disks:
            raise FilesError("This backup has no disks to browse.")
        if not ref:
            return self.disks[0]
        for disk in self.disks:
            if ref in (disk["alias"], disk["disk_id"]):
                return disk
        names = ", ".join(d["alias"] for d in self.disks)
        raise FilesError(f"Backup {self.point_id} has no disk {ref} (it has {names}).")


class InstantRestoreQuerySet(models.QuerySet):
    def active(self):
        """Those whose VM may still run from the backup: the point stays pinned."""
        return self.filter(status__in=InstantRestore.ACTIVE)

    def here(self):
        return self.filter(node=settings.NODE_NAME)

    def untidy(self):
        """Ended ones whose export or temporary directory this node has not removed yet."""
        return self.exclude(status__in=InstantRestore.ACTIVE).filter(tidied=False)


class InstantRestore(models.Model):
    """A backup point booted as a VM straight from the backup (recovery.instant): a temporary storage
    domain on this node's NFS share holds a writable top layer per disk over the point's own files,
    the engine imports it and runs the VM there; later its disks move to production storage
    (migrating -> done) or it is thrown away (discarded). It lives for hours or days, longer than any
    job: the jobs that boot, migrate and discard it are steps of its life, this record its state.
    A restore proof (`purpose` proof) is one booted without network, waited for, and discarded."""

    class Status(models.TextChoices):
        BOOTING = "booting", "Booting"
        RUNNING = "running", "Running from backup"
        MIGRATING = "migrating", "Migrating"
        DONE = "done", "Done"
        DISCARDING = "discarding", "Discarding"
        DISCARDED = "discarded", "Discarded"
        FAILED = "failed", "Failed"

    class Purpose(models.TextChoices):
        RESTORE = "restore", "Instant restore"
        PROOF = "proof", "Restore proof"

    ACTIVE = (Status.BOOTING, Status.RUNNING, Status.MIGRATING, Status.DISCARDING)

    point = models.ForeignKey(
        "repository.BackupPoint", null=True, on_delete=models.SET_NULL, related_name="instant_restores"
    )
    vm = models.ForeignKey(
        "inventory.VM",
        null=True,
        on_delete=models.SET_NULL,
        related_name="instant_restores",
        help_text="The VM the point is a backup of.",
    )
    purpose = models.CharField(max_length=8, choices=Purpose.choices, default=Purpose.RESTORE)
    name = models.CharField(max_length=255, help_text="The name of the VM booted from the backup.")
    cluster = models.CharField(max_length=255, blank=True)
    migrate_to = models.CharField(
        max_length=255, blank=True, help_text="The storage domain its disks move to once it is up (empty: on request)."
    )
    node = models.CharField(max_length=100, help_text="The node that serves its temporary domain over NFS.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BOOTING)
    step = models.CharField(max_length=200, blank=True, help_text="What it is doing, or the step that failed.")
    error = models.TextField(blank=True)
    who = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    up_at = models.DateTimeField(null=True, blank=True)
    seconds_to_up = models.FloatField(null=True, blank=True, help_text="From the request to the VM up.")
    ended = models.DateTimeField(null=True, blank=True)
    # Where it lives: the temporary domain's directory (beside the point, so the point's files are
    # linked into it, never copied), the NFS export serving it, and what the engine made of it.
    directory = models.CharField(max_length=1000, blank=True)
    export_id = models.IntegerField(null=True, blank=True)
    share = models.CharField(max_length=1000, blank=True)
    storage_domain_id = models.CharField(max_length=64, blank=True)
    storage_domain_name = models.CharField(max_length=255, blank=True)
    data_center_id = models.CharField(max_length=64, blank=True)
    vm_engine_id = models.CharField(max_length=64, blank=True)
    disks = models.JSONField(default=list, blank=True, help_text="Each disk: alias, ids on the engine, top volume.")
    top_bytes = models.BigIntegerField(default=0, help_text="What its writable top layers take on the node.")
    claim = models.UUIDField(null=True, blank=True, help_text="The token of its hold on the point's chain.")
    tidied = models.BooleanField(default=False, help_text="Its export and directory are gone.")
    proof_ok = models.BooleanField(null=True, blank=True)
    proof_answer = models.TextField(blank=True, help_text="What the guest answered, the proof it booted.")

    objects = InstantRestoreQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_purpose_display().lower()} {self.pk} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def move(self, *, frm: tuple[str, ...] | str, to: str, **fields) -> bool:
        """A conditional change of state: only from `frm`; False when another change came first."""
        frm = (frm,) if isinstance(frm, str) else frm
        fields = {"status": to, **fields}
        if to not in self.ACTIVE:
            fields.setdefault("ended", timezone.now())
        changed = InstantRestore.objects.filter(pk=self.pk, status__in=frm).update(**fields)
        if changed:
            for key, value in fields.items():
                setattr(self, key, value)
        return bool(changed)
