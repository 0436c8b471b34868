"""Change block tracking (oVirt 4.4+ incremental backup): a VM backup with checkpoints, no snapshot.

Full: a VM backup without `from_checkpoint_id`; each disk is read from the backup's point-in-time
view (zero extents skipped) into a standalone QCOW2. Incremental: a VM backup from the checkpoint
the previous point recorded; for each disk the engine serves incrementally only the dirty extents
are read, into a QCOW2 whose backing file is the previous point's image; a disk the engine serves
in full (no incremental backup enabled, or no bitmap for that checkpoint) is stored whole.

Every backup leaves a checkpoint on the engine; the point records it as its base. Once a point is
safe, the checkpoints before the one the next incremental needs are removed, oldest first (the
only order the engine allows), so the engine keeps one per chain. The VM backup is finalized
whatever happens: on success here, on failure or cancel by the cleanup stack, after a dead worker
by the reaper or the next run.
"""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client

from core.cleanup import Cleanup
from inventory.models import VM, Disk
from ovirt.backups import (
    BackupFailed,
    backup_disks,
    backups_service,
    checkpoints,
    finalize_backup,
    remove_checkpoints_before,
    start_backup,
)
from ovirt.errors import EngineError, fault_text, freeze_failed
from ovirt.transfers import tracked_transfer
from ovirt.vms import last_event, vm_is_down, vm_service
from repository.models import BackupPoint
from repository.writer import PointWriter
from strategies.base import RestartAsFull, Strategy, Window

MiB = 1024**2


class CbtStrategy(Strategy):
    name = "cbt"
    label = "Change block tracking"
    incremental = True
    min_api_version = (4, 4)
    base_noun = "checkpoint"
    # VM backups and checkpoints (StartVmBackup, StopVmBackup, DeleteVmCheckpoint), and the image
    # transfers that read the backup's disks.
    permits = ("backup_disk", "edit_disk_properties")
    # Incremental backup as oVirt 4.4 brought it: vdsm 4.40 and libvirt 6.0 with checkpoints.
    min_host_versions = {"vdsm": (4, 40), "libvirt": (6, 0)}
    bases_removed_oldest_first = True

    def __init__(self, *, job, connection, request):
        super().__init__(job=job, connection=connection, request=request)
        self.previous: BackupPoint | None = None  # the newest point of this chain with a checkpoint
        self.parent: BackupPoint | None = None  # the point this attempt builds on (open_window)
        self.fallback = ""  # why a run chosen incremental became a full once the engine was asked
        self.vm_backup: types.Backup | None = None
        self.modes: dict[str, types.DiskBackupMode] = {}
        self.restarted = False
        self.live = False  # the VM ran when its backup started
        self.consistency_note = ""  # why the point is crash-consistent though quiescing was asked for

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        # Disks without incremental backup are backed up full inside the same VM backup; at least
        # one must track changes, or the strategy is a slower full-only image transfer.
        if not any(not d.incremental_blocker() for d in disks):
            return "no disk of this VM has incremental backup enabled"
        return ""

    # ----- the base of an incremental ------------------------------------------------------------

    def choose_parent(self, previous, disks, *, chain_elsewhere=None):
        self.previous = previous
        return super().choose_parent(previous, disks, chain_elsewhere=chain_elsewhere)

    def base_blocker(self, previous: BackupPoint) -> str:
        if previous.base_kind != BackupPoint.BaseKind.CHECKPOINT:
            return f"backup {previous.pk} kept no checkpoint on the engine."
        root = previous.directory.root
        missing = [r.file for r in previous.disks.all() if not (root / r.file).is_file()]
        if missing:
            return f"backup {previous.pk} is damaged (its file {missing[0]} is missing); a new chain starts."
        kept = next((c for c in checkpoints(self.connection, self.vm_id) if c.id == previous.base_id), None)
        if kept is None:
            self.forget_base(previous)
            return f"checkpoint {previous.base_id} kept by backup {previous.pk} is no longer on the engine."
        if kept.state == types.CheckpointState.INVALID:
            self.forget_base(previous)
            return f"the engine marked checkpoint {previous.base_id} kept by backup {previous.pk} invalid."
        return ""

    def forget_base(self, point: BackupPoint) -> None:
        """A checkpoint the engine lost or refused is never asked for again."""
        BackupPoint.objects.filter(pk=point.pk).update(base_kind="", base_id="")

    # ----- the window: a VM backup ---------------------------------------------------------------

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        self.parent = parent  # None again for a full started again (RestartAsFull)
        checkpoint = parent.base_id if parent is not None else None
        disk_ids = [d.id for d in disks]
        try:
            backup, consistency = self.start(checkpoint, disk_ids)
        except BackupFailed as e:
            if checkpoint is None or e.code in (403, 409):
                # A full would fail the same way: a busy VM, a locked disk or a permit the user's
                # roles lack is not the checkpoint's fault.
                raise
            # The checkpoint is unknown or invalid, or its bitmap missing or inconsistent (qemu crashed,
            # a disk was replaced): only a full is right now, and that checkpoint is never asked for again.
            self.forget_base(self.parent)
            self.fallback = (
                f"Full backup instead of incremental: the engine could not back up from checkpoint "
                f"{checkpoint} kept by backup {self.parent.pk} ({e})."
            )
            self.job.log("warning", self.fallback)
            backup, consistency = self.start(None, disk_ids)
        self.vm_backup = backup
        # On failure or cancel, after the VM backup is finalized (the stack runs newest first): the
        # checkpoint it made is not needed by any point.
        self.prune_undo = cleanup.add("remove the checkpoints no backup needs", self.prune_checkpoints)
        undo = cleanup.add(
            "finalize the VM backup",
            lambda: finalize_backup(self.connection, self.vm_id, backup.id, job=self.job),
        )
        self.modes = {d.id: d.backup_mode for d in backup_disks(self.connection, self.vm_id, backup.id).values()}
        engine_vm = vm_service(self.connection, self.vm_id).get(all_content=True)
        self.live = engine_vm.status != types.VmStatus.DOWN
        config = engine_vm.initialization
        return Window(
            consistency=consistency,
            consistency_note=self.consistency_note if consistency == "crash" else "",
            ovf=config.configuration.data,
            base_kind=BackupPoint.BaseKind.CHECKPOINT if backup.to_checkpoint_id else "",
            base_id=backup.to_checkpoint_id or "",
            undo=undo,
        )

    def start(self, checkpoint: str | None, disk_ids: list[str]) -> tuple[types.Backup, str]:
        """A ready VM backup of the selected disks (from `checkpoint`, or full), between the policy's
        pre and post snapshot commands; quiesced when asked, crash-consistent if the guest cannot
        freeze."""
        req = self.request

        def begin(consistent: bool) -> types.Backup:
            return start_backup(
                self.connection,
                self.vm_id,
                disk_ids=disk_ids,
                from_checkpoint_id=checkpoint,
                description=f"job {self.job.pk}",
                require_consistency=consistent,
                job=self.job,
            )

        def attempt() -> tuple[types.Backup, str]:
            try:
                return begin(req.quiesce), "filesystem" if req.quiesce else "crash"
            except BackupFailed as e:
                if not req.quiesce or not freeze_failed(str(e)):
                    raise
                self.job.log("warning", f"Quiescing failed ({e}); taking a crash-consistent backup instead.")
                self.consistency_note = f"Crash-consistent, not quiesced: {str(e).rstrip('.')}."
                return begin(False), "crash"

        backup, consistency = self.around_guest_commands(attempt)
        kind = f"incremental from checkpoint {checkpoint}" if checkpoint else "full"
        self.job.log("info", f"VM backup {backup.id} ready ({kind})")  # its consistency: settle_consistency
        return backup, consistency

    # ----- moving the disks ----------------------------------------------------------------------

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        if self.fallback and writer.point.parent_id is not None:
            writer.make_full(self.fallback)
        name = f"{disk.id}.qcow2"
        mode = self.modes.get(disk.id)
        parent, backing = None, None
        if mode == types.DiskBackupMode.INCREMENTAL and writer.point.parent_id is not None:
            parent, backing = writer.parent_file(disk.id, name)
        if writer.point.parent_id is not None and backing is None:
            why = "it has no incremental backup enabled" if mode != types.DiskBackupMode.INCREMENTAL else "it is new"
            self.job.log("info", f"Disk {disk.alias} is stored full in this incremental: {why}.")
        part, digest, started = writer.part(name), None, False
        try:
            with tracked_transfer(
                self.connection,
                disk_id=disk.id,
                backup_id=self.vm_backup.id,
                job=self.job,
                base=base,
                total=total,
                what=f"downloading disk {disk.alias}",
            ) as (handle, progress):
                started = True
                # The backup's export is the whole disk at its moment; `incremental` reads only the
                # extents its bitmap marks dirty, the rest comes from the backing file.
                client.download(
                    handle.url,  # the path the job names: the host, or the engine's proxy
                    str(part),
                    self.connection.ca_file,
                    fmt="qcow2",
                    incremental=backing is not None,
                    secure=self.connection.verify_tls,
                    progress=progress,
                    backing_file=backing,
                    backing_format="qcow2" if backing else None,
                )
                digest = writer.hash_soon(part)
        except EngineError as e:
            self.restart_if_backup_failed(disk, error=e, changes_refused=bool(backing) and not started)
            raise
        final = self.commit_disk(writer, disk, name, fmt="qcow2", parent=parent, parent_file=backing, digest=digest)
        read = handle.transferred or 0
        self.job.log(
            "info",
            f"Disk {disk.alias} ({'changes since the checkpoint' if backing else 'whole'}): "
            f"{read / MiB:.1f} MiB read, {final.stat().st_blocks * 512 / MiB:.1f} MiB stored",
        )
        return read

    def restart_if_backup_failed(self, disk: types.Disk, *, error: EngineError, changes_refused: bool) -> None:
        """A read failed because the engine failed the VM backup under it (the VM stopped), or it
        could not serve a disk's changes since the checkpoint (vdsm found no usable bitmap): start
        again as a full, once; a second time, say what the engine said."""
        try:
            phase = backups_service(self.connection, self.vm_id).backup_service(self.vm_backup.id).get().phase
            # The engine fails the backup only once it learns the VM went down; the read can fail first.
            stopped = self.live and vm_is_down(self.connection, self.vm_id)
        except sdk.Error:
            return
        if phase == types.BackupPhase.FAILED or stopped:
            event = last_event(self.connection, self.vm_id)
            if phase == types.BackupPhase.FAILED:
                why = f"the engine failed VM backup {self.vm_backup.id} while disk {disk.alias} was read ({event})"
            else:
                why = f"the VM stopped during VM backup {self.vm_backup.id} while disk {disk.alias} was read ({event})"
        elif changes_refused and self.parent is not None:
            why = (
                f"the engine could not serve the changes of disk {disk.alias} since checkpoint "
                f"{self.parent.base_id} kept by backup {self.parent.pk} ({error})"
            )
            self.forget_base(self.parent)  # its bitmap is unusable: never asked for again
        else:
            return
        if self.restarted:
            raise EngineError(f"{error} {why[0].upper()}{why[1:]}.") from None
        self.restarted, self.parent, self.fallback = True, None, ""
        raise RestartAsFull(f"Full backup, started again: {why}.") from None

    # ----- after the point is complete -----------------------------------------------------------

    def close_window(self, window: Window, cleanup: Cleanup, *, keep: bool) -> None:
        """Finalize the VM backup here (not in the cleanup stack: the point is complete and a failed
        finalize must not discard it), then remove the checkpoints no chain needs."""
        cleanup.discard(window.undo)
        cleanup.discard(self.prune_undo)
        try:
            finalize_backup(self.connection, self.vm_id, self.vm_backup.id, job=self.job)
        except (EngineError, sdk.Error) as e:
            # The data was read from a frozen view and is whole; the checkpoint is not to be trusted.
            BackupPoint.objects.filter(vm=self.request.vm, base_id=window.base_id).update(base_kind="", base_id="")
            self.job.log(
                "warning",
                f"The backup is complete, but {fault_text(e)} The next backup of this VM is a full.",
            )
        if self.previous is None:
            self.prune_checkpoints()  # else once the previous point's checkpoint is retired

    def prune_checkpoints(self) -> None:
        """Remove the checkpoints before the oldest one a kept point builds on (oldest first)."""
        keep = BackupPoint.objects.newest_bases(self.request.vm)
        try:
            removed = remove_checkpoints_before(self.connection, self.vm_id, keep=keep, job=self.job)
        except (EngineError, sdk.Error) as e:
            self.job.log(
                "warning",
                f"The backup is complete, but removing older checkpoints failed: {fault_text(e)}. "
                "The next backup of this VM removes them.",
            )
            return
        if removed:
            self.job.log("info", f"Removed {len(removed)} checkpoint(s) no backup needs any more")

    def retire_base(self, previous: BackupPoint) -> None:
        # The new point is the chain's base now; the previous one's checkpoint goes with the older ones.
        self.forget_base(previous)
        self.prune_checkpoints()
