"""Where backups go and what is stored there.

The files on a destination are the truth (DEST/VM_UUID/BACKUP_ID/ with a manifest written
last); these rows index them for pages, policies and retention.
"""

import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from jobs.placement import ANYWHERE, Placement
from repository.storage import DestinationRefused
from repository.validators import (
    normalized,
    resolved,
    under_backup_root,
    validate_directory_elsewhere,
    validate_path_text,
    validate_writable_directory,
)


class BackupDestinationQuerySet(models.QuerySet):
    def reachable_here(self):
        """The destinations this process can read: shared ones, and those local to this node."""
        return self.filter(models.Q(node=None) | models.Q(node=settings.NODE_NAME))

    def with_usage(self):
        """Each destination's own use: `backup_bytes` (the files of its kept points: complete or damaged,
        as on disk) and `backup_count`, beside the filesystem's free space (free_bytes), which other
        data on the same filesystem shares."""
        kept = models.Q(points__status__in=["complete", "damaged"])
        return self.annotate(
            backup_bytes=models.functions.Coalesce(models.Sum("points__bytes_stored", filter=kept), 0),
            backup_count=models.Count("points", filter=kept),
        )


class BackupDestination(models.Model):
    """A place backups are written to.

    `filesystem` is a directory (local disk, NFS or any mounted share), the one kind there is. Any
    filesystem destination local to a node's own disks can serve an instant restore (its points'
    files are linked into a temporary storage domain beside them and exported over NFS); there is no
    separate kind for it (the `synthetic` kind of before did nothing, and became `filesystem`).

    Without a `node` the directory is shared: every node has it at the same path (an NFS export or
    S3 bucket mounted everywhere), and a job on it runs on any node. With one, it is a directory of
    that node alone, and every job reading or writing it runs there.
    """

    class Kind(models.TextChoices):
        FILESYSTEM = "filesystem", "Filesystem"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.FILESYSTEM)
    # Its text is checked here; its directory where it is (validate_directory): here for a shared
    # destination or one local to this node, by its node otherwise (repository.places).
    path = models.CharField(max_length=500, validators=[validate_path_text])
    node = models.ForeignKey(
        "jobs.Node",
        to_field="name",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="destinations",
        help_text="The node whose own directory this is; empty: shared by every node (mounted at the same path "
        "on each).",
    )
    real_path = models.CharField(
        "resolved path",
        max_length=1000,
        blank=True,
        editable=False,
        help_text="The directory `path` led to when saved (links and `..` resolved); every use checks it still does.",
    )
    shared_before_check = models.BooleanField(
        default=False,
        editable=False,
        help_text="Already shared its directory with an older destination when one destination per directory "
        "became the rule (migration 0005): kept as it was; a change of its path must be unique.",
    )
    enabled = models.BooleanField(default=True)
    capacity_bytes = models.BigIntegerField(null=True, blank=True)
    free_bytes = models.BigIntegerField(null=True, blank=True)
    checked = models.DateTimeField(null=True, blank=True, help_text="When capacity and free space were last read.")
    check_error = models.TextField(
        blank=True, help_text="What its node found wrong with the directory when it last checked it."
    )
    created = models.DateTimeField(default=timezone.now)

    objects = BackupDestinationQuerySet.as_manager()

    # The path and node as last read from or written to the database (None: a new row).
    _saved_path: str | None = None
    _saved_node: str | None = None

    class Meta:
        ordering = ["name"]
        # A shared directory is one for the whole site; a local one is one of its node's (n1 and n2
        # may each have their own /srv/backups). A local destination on a shared one's directory is
        # refused by clean().
        constraints = [
            models.UniqueConstraint(
                fields=["real_path"],
                condition=models.Q(shared_before_check=False, node=None),
                name="destination_one_per_directory",
                violation_error_message="Another destination already uses this directory.",
            ),
            models.UniqueConstraint(
                fields=["node", "real_path"],
                condition=models.Q(shared_before_check=False, node__isnull=False),
                name="destination_one_per_node_directory",
                violation_error_message="Another destination of this node already uses this directory.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        fields = kwargs.get("update_fields")
        path_saved = fields is None or "path" in fields
        moved = self.path != self._saved_path or self.node_id != self._saved_node
        if path_saved and (moved or not self.real_path):
            # Rows made in code record their directory too (the form and the API ran clean() already).
            self.real_path = self.directory_here()
            self.shared_before_check = False
            changed = {"real_path", "shared_before_check"}
            if moved and self._saved_path is not None:
                # Another directory: its space is unknown until it is read (here, or by its node).
                self.capacity_bytes = self.free_bytes = self.checked = None
                self.check_error = ""
                changed |= {"capacity_bytes", "free_bytes", "checked", "check_error"}
            if fields is not None:
                kwargs["update_fields"] = {*fields, *changed}
        super().save(*args, **kwargs)
        self._saved_path, self._saved_node = self.path, self.node_id

    @classmethod
    def from_db(cls, db, field_names, values):
        destination = super().from_db(db, field_names, values)
        destination._saved_path = destination.__dict__.get("path")
        destination._saved_node = destination.__dict__.get("node_id")
        return destination

    def reachable_here(self) -> bool:
        """Whether this process can read the directory: shared, or local to this node."""
        return not self.node_id or self.node_id == settings.NODE_NAME

    def directory_here(self) -> str:
        """Where the path leads, as far as this process can tell: links followed when it can read the
        directory, `..` resolved as written when it is another node's (that node records where it
        really leads when it checks it: repository.places)."""
        return str(resolved(self.path) if self.reachable_here() else normalized(self.path))

    def validate_directory(self) -> None:
        """The path's checks where this process can make them: all of them (an existing, writable
        directory under BACKUP_ROOTS) for a shared destination or one local to this node; for a
        directory of another node only what its text says, that node checking the rest."""
        if self.reachable_here():
            validate_writable_directory(self.path)
        else:
            validate_directory_elsewhere(self.path)

    def clean_fields(self, exclude=None) -> None:
        # The path is checked with its node known (it was a field validator, which sees the path alone).
        errors: dict = {}
        try:
            super().clean_fields(exclude)
        except ValidationError as e:
            errors = e.update_error_dict(errors)
        if "path" not in (exclude or ()) and not {"path", "node"} & errors.keys():
            try:
                self.validate_directory()
            except ValidationError as e:
                errors = ValidationError({"path": e}).update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        """One destination per real directory: `nas`, `nas/`, `//nas` and `nas/../nas` are one (on one
        node, or shared). Saving through the form or the API records where the path leads now (an
        admin's deliberate act: the way to accept a directory that was moved). The node of a
        destination holding backups stays: their files are where it is."""
        self._check_node_change()
        if not self.path or "\0" in self.path or not self.path.startswith("/"):
            return  # the path's own validator says what is wrong
        if not self.reachable_here() and (self.path, self.node_id) == (self._saved_path, self._saved_node):
            return  # where it leads is what its node recorded when it checked it; it checks it again
        real = self.directory_here()
        changed = self._state.adding or real != self.real_path or self.node_id != self._saved_node
        if changed:
            # The same directory: another destination of the same node, or a shared one (mounted on
            # every node, this one's too), or any other when this one is shared.
            same = BackupDestination.objects.filter(real_path=real).exclude(pk=self.pk)
            if self.node_id:
                same = same.filter(models.Q(node=None) | models.Q(node=self.node_id))
            other = same.order_by("pk").first()
            if other is not None:
                spelt = "" if other.path == self.path else f" ({self.path} leads to {real})"
                if other.node_id == self.node_id:
                    where = f" on node {other.node_id}" if other.node_id else ""
                elif other.node_id:
                    where = f", local to node {other.node_id}, which has every shared directory too"
                else:
                    where = f", shared by every node (node {self.node_id} too)"
                raise ValidationError(
                    {
                        "path": f"This is the directory of destination {other.name}{spelt}{where}: one "
                        "destination per directory. Use that destination, or another directory."
                    },
                    code="directory_taken",
                )
            self.shared_before_check = False
        self.real_path = real

    def _check_node_change(self) -> None:
        if self._state.adding or self.node_id == self._saved_node:
            return
        held = self.points.exclude(status=BackupPoint.Status.DELETED).count()
        if held:
            was = f"local to node {self._saved_node}" if self._saved_node else "shared by every node"
            raise ValidationError(
                {
                    "node": f"Destination {self.name} holds {held} backup(s) in its directory, {was}: it stays "
                    "where their files are. Delete its backups first, or add a new destination for the other "
                    "place."
                },
                code="node_has_backups",
            )

    @property
    def location(self) -> str:
        """Where its directory is, for people: "shared" (by every node) or "local to node n2"."""
        return f"local to node {self.node_id}" if self.node_id else "shared"

    def placement(self) -> Placement:
        """Where a job reading or writing this destination may run: on its node when local to one."""
        if not self.node_id:
            return ANYWHERE
        return Placement(node=self.node_id, says=f"holds destination {self.name} (local to node {self.node_id})")

    def checked_path(self) -> Path:
        """The destination's directory, resolved again now. Every read and write of the destination
        goes through here: a directory swapped for a link (out of BACKUP_ROOTS or to another
        directory) after it was saved is refused in words, before anything is read or written; so is
        another node's directory (this node may have a directory of that path, but not that one)."""
        if not self.reachable_here():
            raise DestinationRefused(
                f"The destination {self.name} is local to node {self.node_id}, and this is node "
                f"{settings.NODE_NAME}: its directory {self.path} is read and written on {self.node_id} only."
            )
        real = resolved(self.path)
        if self.real_path and str(real) != self.real_path:
            how = (
                "is now a link to" if os.path.islink(self.path.rstrip("/") or "/") else "now leads (through a link) to"
            )
            was = f" instead of {self.real_path}" if self.real_path != self.path else ""
            raise DestinationRefused(
                f"The destination {self.name}'s directory {self.path} {how} {real}{was}: refused; fix the "
                "directory or the destination."
            )
        if not under_backup_root(real):
            roots = ", ".join(settings.BACKUP_ROOTS) or "none is set"
            raise DestinationRefused(
                f"The destination {self.name}'s directory {real} is not under an allowed backup root ({roots}): "
                "refused; move the destination, or an admin adds its root to BACKUP_ROOTS."
            )
        if not real.is_dir():
            raise DestinationRefused(
                f"The destination {self.name}'s directory {real} is missing: refused; mount the share or "
                "create the directory."
            )
        return real

    def refresh_usage(self, *, save: bool = True) -> None:
        """Read capacity and free space of the filesystem holding `path`."""
        usage = shutil.disk_usage(self.checked_path())
        self.capacity_bytes = usage.total
        self.free_bytes = usage.free
        self.checked = timezone.now()
        self.check_error = ""
        if save:
            self.save(update_fields=["capacity_bytes", "free_bytes", "checked", "check_error"])

    @property
    def used_percent(self) -> float | None:
        """How full the filesystem is (all of its data, not only this destination's backups)."""
        if not self.capacity_bytes:
            return None
        return round(100 * (self.capacity_bytes - (self.free_bytes or 0)) / self.capacity_bytes, 1)


class BackupPointQuerySet(models.QuerySet):
    def complete(self):
        return self.filter(status=BackupPoint.Status.COMPLETE)

    def kept(self):
        """Points whose files are kept on their destination: complete, or found damaged (never removed silently)."""
        return self.filter(status__in=[BackupPoint.Status.COMPLETE, BackupPoint.Status.DAMAGED])

    def with_base(self):
        """Points whose base (a snapshot or checkpoint) is kept on the engine for the next incremental."""
        return self.exclude(base_kind="")

    def latest_with_base(self, vm, destination, strategy: str):
        """The newest complete (or damaged, to say so) point of this chain whose base is kept on the engine."""
        return (
            self.kept()
            .with_base()
            .filter(vm=vm, destination=destination, strategy=strategy)
            .order_by("-started")
            .first()
        )

    def newest_bases(self, vm) -> set[str]:
        """The engine ids of the bases a VM's chains build on: the newest of each (destination, strategy)."""
        newest = {}
        for destination, strategy, base_id in (
            self.kept().with_base().filter(vm=vm).order_by("started").values_list("destination", "strategy", "base_id")
        ):
            newest[destination, strategy] = base_id
        return set(newest.values())


class BackupPoint(models.Model):
    """One backup of one VM at one moment: a full or an incremental on a parent point."""

    class Type(models.TextChoices):
        FULL = "full", "Full"
        INCREMENTAL = "incremental", "Incremental"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"
        DAMAGED = "damaged", "Damaged"
        DELETED = "deleted", "Deleted"

    class Consistency(models.TextChoices):
        APPLICATION = "application", "Application-consistent"
        FILESYSTEM = "filesystem", "Filesystem-consistent (quiesced)"
        CRASH = "crash", "Crash-consistent"
        # Taken while the VM was down: nothing ran to quiesce, its disks are as the guest left them
        # when it stopped (clean after a clean shutdown). oVirt calls such a backup "cold".
        DOWN = "down", "Cold (powered off)"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="BACKUP_ID on disk")
    vm = models.ForeignKey("inventory.VM", on_delete=models.PROTECT, related_name="backup_points")
    destination = models.ForeignKey(BackupDestination, on_delete=models.PROTECT, related_name="points")
    policy = models.ForeignKey("policies.Policy", null=True, blank=True, on_delete=models.SET_NULL)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="points")
    strategy = models.CharField(max_length=30)
    type = models.CharField(max_length=12, choices=Type.choices, default=Type.FULL)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)
    bytes_transferred = models.BigIntegerField(default=0)
    bytes_stored = models.BigIntegerField(default=0)
    ovf_path = models.CharField("OVF location", max_length=500, blank=True)
    ovf_checksum = models.CharField(
        "OVF checksum",
        max_length=150,
        blank=True,
        help_text="algorithm:hex of the saved OVF; empty for points written before it was recorded.",
    )

    class BaseKind(models.TextChoices):
        NONE = "", "None"
        SNAPSHOT = "snapshot", "Snapshot"
        CHECKPOINT = "checkpoint", "Checkpoint"

    base_kind = models.CharField(
        max_length=12,
        choices=BaseKind.choices,
        blank=True,
        default="",
        help_text="What is kept on the engine for the next incremental: a snapshot, a checkpoint, or nothing.",
    )
    base_id = models.CharField("base id", max_length=64, blank=True, help_text="The engine's id of that base.")
    consistency = models.CharField(max_length=12, choices=Consistency.choices, default=Consistency.CRASH)
    note = models.TextField(blank=True, help_text="Why this point is what it is, e.g. a fallback to full.")
    verified = models.DateTimeField(null=True, blank=True, help_text="When its files were last checked.")
    damage = models.TextField(blank=True, help_text="What the last verification found wrong.")

    objects = BackupPointQuerySet.as_manager()

    class Meta:
        ordering = ["-started"]
        indexes = [
            # A VM's newest points on a destination (the tick's full-backup rhythm, per VM of a
            # policy): without it PostgreSQL ANDs the vm and destination indexes, reading every
            # point of the destination for each VM (90 ms a policy at 5,000 VMs).
            models.Index(fields=["vm", "destination", "started"], name="point_vm_destination_started"),
        ]

    def __str__(self) -> str:
        return f"{self.vm} {self.type} {self.started:%Y-%m-%d %H:%M}"

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("point-detail", args=[self.pk])

    @property
    def duration(self):
        return (self.finished - self.started) if self.finished else None

    @property
    def verify_state(self) -> str:
        """What the last verification said, in words: "damaged: ...", "verified", or "not verified"."""
        if self.status == self.Status.DAMAGED:
            return f"damaged: {self.damage}" if self.damage else "damaged"
        return "verified" if self.verified else "not verified"

    def lineage(self) -> list["BackupPoint"]:
        """The points this one is read through, oldest (the full) first, this one last."""
        return [p for p in self.chain() if p.pk == self.pk or self.is_built_on(p)]

    def is_built_on(self, other: "BackupPoint") -> bool:
        """Whether `other` is an ancestor (parent, its parent, ...) of this point, within a chain()."""
        ancestors = getattr(self, "_ancestors", None)
        return ancestors is not None and other.pk in ancestors

    def chain(self) -> list["BackupPoint"]:
        """The whole chain this point belongs to: its full, then every incremental built on it (on
        this point's ancestors and descendants alike), oldest first; failed and deleted points left
        out. Three queries however long the chain: the VM's points of this destination and strategy
        are read as (id, parent) pairs, the chain found among them, then read whole."""
        links = dict(
            BackupPoint.objects.filter(vm_id=self.vm_id, destination_id=self.destination_id, strategy=self.strategy)
            .exclude(status__in=[self.Status.FAILED, self.Status.DELETED])
            .values_list("pk", "parent_id")
        )
        links[self.pk] = self.parent_id
        ancestors, up = [], self.parent_id
        while up is not None and up in links and up not in ancestors:
            ancestors.append(up)
            up = links[up]
        root = ancestors[-1] if ancestors else self.pk
        members, grown = {root}, True
        while grown:  # every point whose parent is already in the chain
            more = {pk for pk, parent in links.items() if parent in members} - members
            members |= more
            grown = bool(more)
        points = list(
            BackupPoint.objects.filter(pk__in=members)
            .select_related("job")
            .prefetch_related("disks")
            .order_by("started", "pk")
        )
        self._ancestors = set(ancestors)
        for point in points:
            point.current = point.pk == self.pk
        return points

    def history(self) -> list[dict]:
        """What happened to this point, oldest first: written (by its job), verified, and what people
        asked of it (the audit log's entries naming it: verify, restore, delete...), with the jobs that
        name it (restores, instant restores, file sessions), each job's status beside it."""
        from core.formats import label
        from core.models import AuditEvent
        from jobs.models import Job

        rows = [{"time": self.started, "what": f"{self.get_type_display()} backup started", "job": self.job}]
        if self.finished:
            rows.append({"time": self.finished, "what": f"Backup ended: {self.get_status_display().lower()}"})
        events = list(AuditEvent.objects.filter(target_type="backuppoint", target_id=str(self.pk)).order_by("time"))
        named = {e.details.get("job") for e in events if isinstance(e.details, dict) and e.details.get("job")}
        jobs = {j.pk: j for j in Job.objects.filter(models.Q(params__point=self.pk) | models.Q(pk__in=named))}
        for event in events:
            job = jobs.get(event.details.get("job")) if isinstance(event.details, dict) else None
            who = event.actor_name or "someone"
            rows.append(
                {
                    "time": event.time,
                    "what": f"{label(event.action, 'audit')} by {who} ({event.get_source_display()})",
                    "job": job,
                }
            )
        for job in sorted(jobs.values(), key=lambda j: j.created):
            if job.pk not in named and job.pk != self.job_id:
                rows.append({"time": job.created, "what": f"{job.kind_label}: {job.name}", "job": job})
        if self.verified:
            found = f"found damaged: {self.damage}" if self.status == self.Status.DAMAGED else "no problem found"
            rows.append({"time": self.verified, "what": f"Last verified: {found}"})
        return sorted(rows, key=lambda row: row["time"])

    @property
    def directory(self):
        from repository.storage import PointDir

        return PointDir(self.destination.checked_path(), str(self.vm.engine_id), str(self.uuid))

    def manifest(self):
        """The point's manifest as its directory has it (RepositoryError when missing or corrupt)."""
        from repository.manifest import Manifest

        return Manifest.read(self.directory.path)

    def discard(self) -> None:
        """An unfinished point: remove what was written and mark it failed, unless the database holds
        it complete (the row, not this object, is the truth)."""
        if BackupPoint.objects.filter(pk=self.pk, status=BackupPoint.Status.COMPLETE).exists():
            return
        try:
            self.directory.remove()
        except DestinationRefused:
            pass  # the directory leads elsewhere now: nothing there is touched; the row still fails
        BackupPoint.objects.filter(pk=self.pk).update(status=BackupPoint.Status.FAILED, finished=timezone.now())
        self.status = BackupPoint.Status.FAILED


class DiskBackup(models.Model):
    """One disk's image within a backup point."""

    class Format(models.TextChoices):
        QCOW2 = "qcow2", "QCOW2"
        RAW = "raw", "RAW"

    point = models.ForeignKey(BackupPoint, on_delete=models.CASCADE, related_name="disks")
    disk = models.ForeignKey("inventory.Disk", on_delete=models.PROTECT, related_name="backups")
    file = models.CharField(max_length=500, help_text="Path relative to the destination.")
    format = models.CharField(max_length=6, choices=Format.choices, default=Format.QCOW2)
    virtual_size = models.BigIntegerField(default=0)
    stored_size = models.BigIntegerField(default=0)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    checksum = models.CharField(max_length=150, blank=True, help_text="algorithm:hex of the stored file's bytes")
    merged_checksum = models.CharField(
        max_length=150,
        blank=True,
        help_text="While a consolidation makes this layer standalone: algorithm:hex of the merged image that "
        "replaces it, recorded before any manifest names it.",
    )

    class Meta:
        ordering = ["point", "disk__name"]
        constraints = [models.UniqueConstraint(fields=["point", "disk"], name="diskbackup_one_per_disk")]

    def __str__(self) -> str:
        return f"{self.disk} in {self.point}"


class PointClaim(models.Model):
    """One holder's claim on one backup point (see repository.claims): a reader (a restore, a verify,
    a backup building on it) shares the point; a deletion or a consolidation holds it alone.

    A claim lives as long as its job runs and beats its heartbeat; one without a job (a deletion asked
    from a page, the API or the command line) until `expires`, or until its process is gone."""

    class Mode(models.TextChoices):
        READ = "read", "Read"
        EXCLUSIVE = "exclusive", "Exclusive"

    token = models.UUIDField(db_index=True, help_text="Every row of one claim (its points) shares it.")
    point = models.ForeignKey(BackupPoint, on_delete=models.CASCADE, related_name="claims")
    mode = models.CharField(max_length=10, choices=Mode.choices)
    doing = models.CharField(max_length=100, help_text='What the holder does with it, as in "being read".')
    holder = models.CharField(max_length=200, help_text='Who, in words: "restore job 42".')
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="claims")
    node = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True, help_text="For a claim without a job.")

    def __str__(self) -> str:
        return f"backup {self.point_id} being {self.doing} by {self.holder}"
