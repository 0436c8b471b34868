"""The strategy skeleton: `Strategy.backup()` is written once, here; each strategy fills its steps.

    choose the base of an incremental, or say why it must be full   incremental_blocker()
    open the consistency window (snapshot, VM backup, or nothing)   open_window(cleanup, disks=, parent=)
    bring the whole VM's data out at once, if it comes out so       stage_vm(window, writer, cleanup, disks=)
    move each disk into the point writer                            move_disk(disk, window, writer, cleanup=, ...)
    close the window                                                close_window()
    retire the old base                                             retire_base()

and, outside a run, what a dead worker of the strategy left on a node: abandon(job).

A strategy whose window fails under the disks being read raises RestartAsFull: that attempt is
cleaned up and the backup starts again, once, as a full.

Every step that makes something registers its undo on the cleanup stack it is given (newest
first, whatever happens), and records what it makes on the engine on the job as soon as the
engine returns its id (`job.remember_engine_object(kind, id, ...)`, each kind's undo registered
with `ovirt.leftovers.register_undo`), so that the reaper undoes what a dead worker left.

A strategy's options are declared once (`options`, a tuple of `Option`): the backup form, the API,
`manage.py backup` and the policies offer and check them from there (strategies.registry.check_options),
and the strategy reads them with `self.option(name)`.

Everything else (leftovers of earlier runs, disk selection, the free-space check, the point's
directory, checksums, manifest and rows, the cleanup stack) is shared and lives here or in
repository.writer.
"""

from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from core.cleanup import Cleanup
from core.errors import Cancelled, OperatorError
from core.formats import iec, plural
from inventory.models import VM, Disk, Host
from jobs.errors import JobError
from jobs.placement import Placement, in_cluster
from jobs.snapshot_removals import await_snapshot_removals
from ovirt.connection import version_shortfall
from ovirt.errors import EngineError, fault_text
from ovirt.leftovers import clean_leftovers
from ovirt.polling import wait_for
from ovirt.snapshots import create_snapshot, remove_snapshot, snapshot_ovf
from ovirt.vms import vm_disks, vm_is_down, vm_service
from ovirt.volumes import disk_allocation
from repository.claims import PointBusy, claim_chain
from repository.manifest import ManifestDisk
from repository.models import BackupDestination, BackupPoint, DiskBackup
from repository.storage import destination_full
from repository.writer import PointWriter
from strategies.guest import run_guest_command

MiB = 1024**2
T = TypeVar("T")


class RestartAsFull(JobError):
    """The window failed under the disks being read (a VM backup the engine failed, a VM that
    stopped): the attempt is cleaned up and the backup starts again once, as a full."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


@dataclass
class BackupRequest:
    """What a backup job asks for, resolved from its parameters and policy."""

    vm: VM
    destination: BackupDestination
    type: str  # "full", "incremental" or "auto"
    quiesce: bool = True
    keep_base: bool = True  # keep the snapshot or checkpoint for the next incremental
    excluded: set[str] = field(default_factory=set)  # disk ids or aliases
    policy: object = None
    full_reason: str = ""  # why a full backup was asked for (a policy's rhythm), noted on the point
    options: dict = field(default_factory=dict)  # the strategy's own options, checked against its `options`


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Option:
    """One option a strategy declares (`Strategy.options`). The backup form, the API, `manage.py
    backup` and the policies read these to offer it and to check what they are given."""

    name: str  # as the API and the command line take it: "netcat"
    type: type  # bool, int or str
    label: str  # for people: "SSH transfer through netcat"
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()  # the values a str option takes (none: any text)

    def parse(self, value: Any) -> Any:
        """The value as this option's type, from JSON or from the command line's text; ValueError in words."""
        where = f"Option {self.name}"
        if self.type is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in TRUE_WORDS or word in FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError(f"{where} is true or false, not {value!r}.")
        if self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ValueError(f"{where} is a whole number, not {value!r}.")
        if not isinstance(value, str):
            raise ValueError(f"{where} is text, not {value!r}.")
        if self.choices and value not in self.choices:
            raise ValueError(f"{where} is one of {', '.join(self.choices)}, not {value!r}.")
        return value

    def describe(self) -> str:
        """ "netcat (true or false, default false): HELP" for help texts."""
        kind = {bool: "true or false", int: "a whole number"}.get(self.type) or (
            " | ".join(self.choices) if self.choices else "text"
        )
        default = str(self.default).lower() if self.type is bool else self.default
        return f"{self.name} ({kind}, default {default}): {self.help}"


@dataclass
class Window:
    """The consistency window: the moment the backup captures, open while the disks move."""

    consistency: str  # "filesystem" or "crash" as the capture reached it; "down" set by the skeleton
    ovf: str
    consistency_note: str = ""  # why the point is crash-consistent when quiescing was asked for
    base_kind: str = ""  # what the window leaves on the engine for the next incremental
    base_id: str = ""
    disk_images: dict[str, str] = field(default_factory=dict)  # disk id -> the image to read
    # disk id -> where move_disk reads it, as stage_vm left it (a device on the proxy, a file on the share)
    staged: dict[str, str] = field(default_factory=dict)
    undo: Callable[[], None] | None = None  # the cleanup step that closes it, when not kept


class Strategy:
    """One way of moving a VM's data into a backup point. Subclasses set the class attributes and
    fill the steps; `backup()` itself is not overridden."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    incremental: ClassVar[bool] = False
    min_api_version: ClassVar[tuple[int, int]] = (4, 0)
    deprecated: ClassVar[bool] = False
    implemented: ClassVar[bool] = True
    default: ClassVar[bool] = False  # the strategy a backup without a policy uses
    base_noun: ClassVar[str] = "snapshot"  # what an incremental needs kept on the engine
    # What the engine user's roles must hold (the engine's permit names); the connection test names
    # the missing ones.
    permits: ClassVar[tuple[str, ...]] = ()
    # The hosts' minimum versions by component, as the API reports them ("vdsm", "libvirt").
    min_host_versions: ClassVar[dict[str, tuple[int, ...]]] = {}
    # The engine removes this strategy's bases oldest first only (checkpoints): one that a failed or
    # cancelled run made after the chain's kept base stays until the next backup retires that base.
    bases_removed_oldest_first: ClassVar[bool] = False
    # What a backup with this strategy may be asked besides the shared settings (ssh_transfer: netcat).
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, *, job, connection, request: BackupRequest):
        self.job = job
        self.connection = connection
        self.request = request
        self.vm_id = str(request.vm.engine_id)
        self.claims = ExitStack()  # the claim on the chain an incremental builds on (see claim_parent)
        self.down_at_capture = False  # the VM was down when the window opened (around_guest_commands)

    # ----- what a strategy is, and whether it can back a VM up --------------------------------

    @classmethod
    def placement(cls, job) -> Placement:
        """Where a backup with this strategy may run: a node serving the VM's cluster (a strategy that
        must run on one node, such as inside the cluster's proxy VM, says so here)."""
        cluster = job.vm.cluster if job.vm is not None else None
        return in_cluster(cluster.name if cluster is not None else None)

    @classmethod
    def slots(cls, job) -> list[dict]:
        """The limited resources a backup with this strategy holds while it runs, besides its VM's
        engine, host and storage domains (jobs.kinds): a proxy VM's attachment places. None by default."""
        return []

    @classmethod
    def option_named(cls, name: str) -> Option | None:
        return next((o for o in cls.options if o.name == name), None)

    def option(self, name: str) -> Any:
        """The value of one of this strategy's options for this backup: as asked, else its default."""
        declared = self.option_named(name)
        if declared is None:
            raise KeyError(f"The {self.label} strategy declares no option {name!r}.")
        return self.request.options.get(name, declared.default)

    @classmethod
    def abandon(cls, job) -> None:
        """What a dead worker of this strategy left that a node undoes first, whether or not the
        engine answers (ssh_transfer: the LVs it activated on hosts; files it staged on this node).
        Called by the node that reaps the job (strategies.backup.abandon_backup), before the records
        on the engine are undone by their kinds' undos, and again by the job's own node when it
        rejoins: it must do no harm the second time. The unfinished point is the skeleton's (removed
        before this). Nothing by default."""

    @classmethod
    def display_label(cls) -> str:
        return cls.label + (" (deprecated)" if cls.deprecated else "")

    @classmethod
    def unavailable_reason(cls, vm: VM | None, disks: list[Disk] | None = None) -> str:
        """Why this strategy cannot back this VM up now, or "" when it can."""
        if not cls.implemented:
            return "not implemented in this version yet"
        if vm is None:
            return ""
        version = vm.manager.api_version
        if version is not None and version < cls.min_api_version:
            return f"needs engine API {cls.min_api_version[0]}.{cls.min_api_version[1]}+"
        return cls.host_blocker(vm) or cls.vm_blocker(vm, list(vm.disks.all()) if disks is None else disks)

    @classmethod
    def host_blocker(cls, vm: VM) -> str:
        """Which host the VM may run its backup on falls short of `min_host_versions` ("" if none):
        the host it runs on, or else every host of its cluster that is up (the engine picks one)."""
        if not cls.min_host_versions:
            return ""
        if vm.host_id is not None:
            hosts = [vm.host]
        elif vm.cluster_id is not None:
            hosts = list(Host.objects.filter(cluster_id=vm.cluster_id, status=Host.Status.UP).order_by("name"))
        else:
            hosts = []
        short = [(h.name, version_shortfall(h.versions(), cls.min_host_versions)) for h in hosts]
        return "; ".join(f"host {name} falls short: {what}; update it" for name, what in short if what)

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        """What this strategy in particular needs of the VM (credentials, a proxy, disk settings)."""
        return ""

    # ----- the skeleton ----------------------------------------------------------------------

    def backup(self) -> BackupPoint:
        req, job = self.request, self.job
        try:
            vm_service(self.connection, self.vm_id).get()
        except sdk.NotFoundError:
            raise JobError(f"VM {req.vm.name} ({self.vm_id}) no longer exists on the engine.") from None
        # A snapshot removal our code asks outside this backup is asked before it, or not at all
        # while it runs (jobs.snapshot_removals): the volumes are not merged under the disks it reads.
        await_snapshot_removals(job, self.vm_id)
        previous = (
            BackupPoint.objects.latest_with_base(req.vm, req.destination, self.name) if self.incremental else None
        )
        self.clean_leftovers()
        disks = self.select_disks()
        chain_elsewhere = self.chain_elsewhere()
        total = sum(d.provisioned_size for d in disks)
        with ExitStack() as self.claims:
            parent, note = self.choose_parent(previous, disks, chain_elsewhere=chain_elsewhere)
            try:
                point = self.write_point(disks, parent=parent, note=note, total=total, chain_elsewhere=chain_elsewhere)
            except RestartAsFull as restart:
                # Its cleanup ran: the window is closed and the unfinished point removed.
                job.log("warning", restart.note)
                try:
                    point = self.write_point(
                        disks, parent=None, note=restart.note, total=total, chain_elsewhere=chain_elsewhere
                    )
                except RestartAsFull as again:
                    # Started again once only: what keeps failing the window is told, nothing stored.
                    raise JobError(
                        f"{again.note.removeprefix('Full backup, started again: ').rstrip('.')}, during the full "
                        "backup started again after the same kind of failure. Nothing was stored; back the VM up "
                        "again once nothing else changes it."
                    ) from None
            # The claim on the parent's chain ends here, with the new point complete: a deletion
            # claiming the parent from now on finds the new point among its dependants.
        job.set_progress(total, total)
        if previous is not None:
            self.retire_base(previous)
        return point

    def write_point(
        self,
        disks: list[types.Disk],
        *,
        parent: BackupPoint | None,
        note: str,
        total: int,
        chain_elsewhere: BackupPoint | None,
    ) -> BackupPoint:
        """One attempt at the point: open the window, move the disks, complete the point, close the window."""
        req, job = self.request, self.job
        writer = PointWriter.start(
            vm=req.vm,
            destination=req.destination,
            strategy=self.name,
            job=job,
            policy=req.policy,
            parent=parent,
            note=note,
            needed_bytes=self.space_needed(disks, parent),
        )
        job.set_progress(0, total)
        kind = writer.point.get_type_display()
        job.log("info", f"{kind} backup of {plural(len(disks), 'disk')}, {iec(total)} virtual")
        with Cleanup(job, describe=fault_text) as cleanup:
            cleanup.add("remove the unfinished backup", writer.abandon)
            self.down_at_capture = False  # per attempt: a full started again captures anew
            window = self.open_window(cleanup, disks=disks, parent=parent)
            self.settle_consistency(window)
            job.check_cancel()
            self.stage_vm(window, writer, cleanup, disks=disks)
            writer.write_ovf(window.ovf)
            done = read = 0
            for disk in disks:
                job.check_cancel()
                try:
                    read += self.move_disk(disk, window, writer, cleanup=cleanup, base=done, total=total)
                except Cancelled:
                    raise
                except Exception as e:
                    # Checked before the cleanup frees the room: a copy that failed on a full
                    # destination is told as such, whatever the copying tool said.
                    full = destination_full(writer.directory.path, str(e))
                    if full is None:
                        raise
                    raise full from e
                done += disk.provisioned_size
            keep = req.keep_base and self.incremental and bool(window.base_kind) and chain_elsewhere is None
            point = writer.complete(
                consistency=window.consistency,
                base_kind=window.base_kind if keep else "",
                base_id=window.base_id if keep else "",
                bytes_read=read or done,
                note=window.consistency_note,
            )
            if keep:
                # Only now that the point is complete and refers to it is the base no leftover: a
                # worker that dies before this leaves it recorded, and the reaper removes it (one
                # that dies right after the point completed finds it kept: see abandon_backup).
                job.forget_engine_object(window.base_id)
            self.close_window(window, cleanup, keep=keep)
        return point

    # ----- steps every engine-based strategy shares (override where a strategy differs) --------

    def clean_leftovers(self) -> None:
        """Close what an interrupted run left on the VM, keeping the base each chain (destination and
        strategy) builds its next incremental on."""
        keep = BackupPoint.objects.newest_bases(self.request.vm)
        clean_leftovers(self.connection, self.vm_id, keep=keep, job=self.job)

    def select_disks(self) -> list[types.Disk]:
        """The disks to back up, once the engine no longer holds them locked (a merge from the last run)."""
        req, job = self.request, self.job
        said = set()

        def ready():
            disks = [
                d
                for d in vm_disks(self.connection, self.vm_id)
                if d.id not in req.excluded and d.alias not in req.excluded
            ]
            locked = [d.alias for d in disks if d.status == types.DiskStatus.LOCKED]
            for alias in set(locked) - said:
                job.log("info", f"Waiting for the engine to release disk {alias} (locked)")
                said.add(alias)
            return None if locked else (disks or [None])

        disks = [d for d in wait_for(ready, what="the VM's disks to be unlocked", timeout=3600, job=job) if d]
        if not disks:
            raise JobError(f"Every disk of VM {req.vm.name} is excluded: there is nothing to back up.")
        for d in disks:
            if d.status != types.DiskStatus.OK:
                raise JobError(f"Disk {d.alias} is {d.status.value} on the engine; a backup cannot start over it.")
        if req.excluded:
            job.log("info", f"Excluded disks: {', '.join(sorted(req.excluded))}")
        return disks

    def chain_elsewhere(self) -> BackupPoint | None:
        """The newest point of this VM's incremental chain on another destination, if there is one.

        A VM has one chain per strategy: each kept base is a layer under the VM's disks, and a second
        chain's snapshot would sit between the first chain's base and the data its next incremental
        must read. Backups to other destinations are full then, keeping nothing on the engine."""
        if not self.incremental:
            return None
        return (
            BackupPoint.objects.kept()
            .with_base()
            .filter(vm=self.request.vm, strategy=self.name)
            .exclude(destination=self.request.destination)
            .select_related("destination")
            .order_by("-started")
            .first()
        )

    def choose_parent(
        self, previous: BackupPoint | None, disks: list[types.Disk], *, chain_elsewhere: BackupPoint | None = None
    ) -> tuple[BackupPoint | None, str]:
        """The point an incremental builds on (None: full), and the note saying why it is full."""
        kind, note = self.request.type, ""
        if chain_elsewhere is not None:
            note = (
                f"Full backup, keeping nothing on the engine: VM {self.request.vm.name} keeps its incremental chain "
                f"on destination {chain_elsewhere.destination.name} (backup {chain_elsewhere.pk}), and a VM has one "
                f"chain per strategy, so its backups to other destinations are full."
            )
            self.job.log("warning" if kind == "incremental" else "info", note)
            return None, note
        if kind == "incremental" and not self.incremental:
            note = f"Full backup instead of incremental: the {self.label} strategy makes full backups only."
        elif kind in ("incremental", "auto") and previous is not None:
            reason = self.incremental_blocker(previous, disks)
            if not reason:
                return self.claim_parent(previous)
            note = f"Full backup instead of incremental: {reason}"
        elif kind == "incremental":
            note = f"Full backup instead of incremental: there is no earlier backup with a kept {self.base_noun}."
        elif kind == "full" and self.request.full_reason:
            note = self.request.full_reason
            self.job.log("info", note)
            return None, note
        if note:
            self.job.log("warning", note)
        return None, note

    def claim_parent(self, parent: BackupPoint) -> tuple[BackupPoint | None, str]:
        """Claim the chain the incremental builds on for reading until the new point is complete
        (`self.claims`, closed by `backup()`), so nothing deletes or merges it meanwhile; a chain being
        deleted or merged now is not built on: the backup is a full, and says why."""
        try:
            self.claims.enter_context(claim_chain(parent, job=self.job))
        except PointBusy as e:
            note = f"Full backup instead of incremental: {e.what}, so it is not built on."
            self.job.log("warning", note)
            return None, note
        return parent, ""

    def incremental_blocker(self, previous: BackupPoint, disks: list[types.Disk]) -> str:
        """Why the next backup cannot build on `previous` ("" when it can): its files, its base, then its disks."""
        if previous.status == BackupPoint.Status.DAMAGED:
            return f"backup {previous.pk} is damaged ({previous.damage.splitlines()[0]}); a new chain starts."
        return self.base_blocker(previous) or self.disks_changed(previous, disks)

    def base_blocker(self, previous: BackupPoint) -> str:
        """Why the base `previous` kept on the engine cannot be built on ("" when it can). For the
        strategies that keep a snapshot: it is gone, being removed, or a later one was taken."""
        if previous.base_kind != BackupPoint.BaseKind.SNAPSHOT:
            return f"backup {previous.pk} kept no {self.base_noun} on the engine."
        snapshots = vm_service(self.connection, self.vm_id).snapshots_service().list()
        kept = next((s for s in snapshots if s.id == previous.base_id), None)
        if kept is None:
            return f"the snapshot kept by backup {previous.pk} was deleted on the engine."
        if kept.snapshot_status == types.SnapshotStatus.LOCKED:
            # Being removed (the engine merges it), by someone else than us: we wait for ours.
            return f"the snapshot kept by backup {previous.pk} is being removed on the engine."
        later = [
            s
            for s in snapshots
            if s.snapshot_type == types.SnapshotType.REGULAR and s.date and kept.date and s.date > kept.date
        ]
        if later:
            return f"snapshot '{later[0].description}' was taken after the kept one, so the chain changed."
        return ""

    def disks_changed(self, previous: BackupPoint, disks: list[types.Disk]) -> str:
        before = {str(r.disk.engine_id): r.virtual_size for r in previous.disks.select_related("disk")}
        if set(before) != {d.id for d in disks}:
            return "the VM's disks changed (a disk was added, removed or excluded) since the last backup."
        extended = [d.alias for d in disks if before[d.id] != d.provisioned_size]
        if extended:
            return f"disk {extended[0]} was extended since the last backup."
        return ""

    def space_needed(self, disks: list[types.Disk], parent: BackupPoint | None) -> int:
        """About what the point will take: the disks' allocation for a full, a tenth for an incremental."""
        if parent is None:
            return sum(d.actual_size or 0 for d in disks)
        return sum(d.provisioned_size for d in disks) // 10

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        """Open the consistency window over `disks` (the selected ones) for a point building on `parent`
        (None: a full), registering its undo on `cleanup`; the helpers below take a snapshot between
        the pre/post commands (open_snapshot_window). Nothing may be made on the engine before a step
        that can fail for want of something this node must reach (a host, a proxy) has passed."""
        raise NotImplementedError

    def stage_vm(self, window: Window, writer: PointWriter, cleanup: Cleanup, *, disks: list[types.Disk]) -> None:
        """The VM-wide step, for strategies whose data comes out for the whole VM at once (export
        the VM, or its snapshot's clone, and wait; attach every disk snapshot to the proxy and find
        its device): called once the window is open, before any disk is moved and before the point's
        OVF is written (a strategy may replace `window.ovf` with the exported one). What it makes it
        records on the job and registers its undo on `cleanup`; what move_disk then reads per disk it
        puts in `window.staged`. Nothing by default."""

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        """Store one disk in the point (progress from `base` of `total` bytes); returns the bytes read.
        What it makes for this disk alone (an attachment, an LV activated) it undoes itself once the
        disk is stored, and registers on `cleanup` meanwhile, so that a failure undoes it too."""
        raise NotImplementedError

    def close_window(self, window: Window, cleanup: Cleanup, *, keep: bool) -> None:
        """The point is complete: keep the window's base for the next incremental, or let the
        cleanup stack close it."""
        if keep and window.undo is not None:
            cleanup.discard(window.undo)

    def retire_base(self, previous: BackupPoint) -> None:
        """The new point is safe: the base `previous` kept is no longer needed."""
        if previous.base_kind == BackupPoint.BaseKind.SNAPSHOT:
            self.remove_kept_snapshot(previous)

    def settle_consistency(self, window: Window) -> None:
        """The point's consistency, decided here for every strategy: what the capture reached
        (quiesced or crash-consistent), unless the VM was down when it was taken. Then nothing ran in
        the guest to freeze or to crash mid-write: its disks are as the guest left them when it
        stopped (clean after a clean shutdown), which is not "quiesced", whatever the engine answered
        to the request for it."""
        said = ""
        if self.down_at_capture:
            window.consistency, window.consistency_note = BackupPoint.Consistency.DOWN, ""
            said = (
                f": VM {self.request.vm.name} was down when the backup was taken, so its disks are as the guest "
                "left them when it stopped; nothing was quiesced"
            )
        self.job.log("info", f"Consistency: {BackupPoint.Consistency(window.consistency).label}{said}")

    # ----- helpers for the steps -------------------------------------------------------------

    def open_snapshot_window(self, cleanup: Cleanup) -> Window:
        """A snapshot between the policy's pre and post snapshot commands, removed by the cleanup
        stack unless the point keeps it."""
        snapshot, consistency, why = self.take_snapshot(description=f"job {self.job.pk}")
        undo = cleanup.add(
            "remove the new snapshot",
            lambda: remove_snapshot(self.connection, self.vm_id, snapshot.id, job=self.job),
        )
        return Window(
            consistency=consistency,
            consistency_note=why,
            ovf=snapshot_ovf(self.connection, self.vm_id, snapshot.id),
            base_kind=BackupPoint.BaseKind.SNAPSHOT,
            base_id=snapshot.id,
            undo=undo,
        )

    def take_snapshot(self, *, description: str) -> tuple[types.Snapshot, str, str]:
        """The VM's snapshot, between the policy's pre and post snapshot commands (in the guest).

        A failing pre command stops the backup before anything exists on the engine. The post
        command runs whenever the snapshot was attempted, failed or not, as it usually undoes what
        the pre command did; its failure is a warning, since the snapshot is good.
        """

        def take():
            taken = create_snapshot(
                self.connection, self.vm_id, description=description, quiesce=self.request.quiesce, job=self.job
            )
            self.job.log("info", f"Snapshot {taken[0].id} taken")  # its consistency: settle_consistency
            return taken

        return self.around_guest_commands(take)

    def around_guest_commands(self, capture: Callable[[], T]) -> T:
        """`capture()` (the moment a backup captures: a snapshot, a VM backup's start) between the
        policy's pre and post snapshot commands, run in the guest. Every strategy captures through
        here, so here the skeleton notes whether the VM was down at that moment (`down_at_capture`,
        read by settle_consistency): down just before the capture and still down once it is taken
        (the engine keeps a VM from starting while its snapshot or backup is being made)."""
        req, job = self.request, self.job
        pre = req.policy.pre_snapshot_command.strip() if req.policy else ""
        post = req.policy.post_snapshot_command.strip() if req.policy else ""
        if pre:
            run_guest_command(vm=req.vm, policy=req.policy, command=pre, phase="pre-snapshot", job=job)
        try:
            down = vm_is_down(self.connection, self.vm_id)
            captured = capture()
            self.down_at_capture = down and vm_is_down(self.connection, self.vm_id)
            return captured
        finally:
            if post:
                try:
                    run_guest_command(vm=req.vm, policy=req.policy, command=post, phase="post-snapshot", job=job)
                except JobError as e:
                    job.log("warning", f"{e} Check the guest: the backup goes on.")

    def remove_kept_snapshot(self, previous: BackupPoint) -> None:
        """Remove the snapshot an older point kept; the engine merges it in the background, and the
        next run waits for a busy disk and refuses an illegal one."""
        # The new point is the chain's base from now on, whatever the engine answers: a snapshot that
        # could not be removed now is a leftover that the next run removes.
        BackupPoint.objects.filter(pk=previous.pk).update(base_kind="", base_id="")
        try:
            remove_snapshot(self.connection, self.vm_id, previous.base_id, job=self.job, wait=False)
            self.job.log("info", f"Removing the snapshot kept by backup {previous.pk} (the engine merges it)")
        except (OperatorError, sdk.Error) as e:
            self.job.log(
                "error",
                f"The backup is complete, but removing the older snapshot failed: {fault_text(e)}. "
                "The next backup of this VM removes it.",
            )

    def commit_disk(
        self,
        writer: PointWriter,
        disk: types.Disk,
        name: str,
        *,
        fmt: str,
        parent: DiskBackup | None = None,
        parent_file: str | None = None,
        digest: Future | None = None,
    ) -> Path:
        """The disk's finished file `name` into the point, recorded as the engine reports the disk
        (its manifest entry and inventory row); `parent`/`parent_file` for a layer on the parent's
        image, `digest` when the checksum was taken while the data moved. Returns its final path."""
        return writer.commit_disk(
            name,
            entry=self.manifest_entry(disk, fmt=fmt, parent_file=parent_file),
            inventory_disk=self.inventory_disk(disk),
            parent=parent,
            digest=digest,
        )

    def manifest_entry(self, disk: types.Disk, *, fmt: str, parent_file: str | None) -> ManifestDisk:
        """The manifest's record of a disk, from what the engine says of it (file, sizes and
        checksum are filled by the writer). Its format and allocation are the disk's own, which a
        restore creates it with, not its active volume's (see disk_allocation)."""
        disk_format, sparse = self.original_allocation(disk)
        return ManifestDisk(
            disk_id=disk.id,
            alias=disk.alias,
            file="",
            format=fmt,
            virtual_size=disk.provisioned_size,
            stored_size=0,
            checksum="",
            disk_format=disk_format,
            sparse=sparse,
            backup_enabled=disk.backup == types.DiskBackup.INCREMENTAL,
            storage_domain_id=disk.storage_domains[0].id if disk.storage_domains else None,
            parent_file=parent_file,
        )

    def original_allocation(self, disk: types.Disk) -> tuple[str, bool]:
        """The disk's format and allocation as it was created (its base volume's): a RAW disk under a
        snapshot is reported by the engine as a thin QCOW2, and would be restored as one."""
        try:
            return disk_allocation(self.connection, disk)
        except EngineError as e:
            fmt, sparse = disk.format.value, bool(disk.sparse)
            self.job.log(
                "warning",
                f"Disk {disk.alias}: {str(e).rstrip('.')}. It is recorded as the engine reports its active volume "
                f"({'QCOW2' if fmt == 'cow' else 'RAW'}, {'thin' if sparse else 'preallocated'}), and a restore "
                "creates it so unless given another allocation.",
            )
            return fmt, sparse

    def inventory_disk(self, disk: types.Disk) -> Disk:
        row, _ = Disk.objects.get_or_create(
            manager=self.request.vm.manager,
            engine_id=disk.id,
            defaults={"name": disk.alias or disk.id, "vm": self.request.vm, "provisioned_size": disk.provisioned_size},
        )
        return row
