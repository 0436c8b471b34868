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
