"""VM backups (oVirt 4.4+ incremental backup) and the checkpoints they leave on the engine.

A VM backup is the engine's point-in-time view of a VM's disks: started with or without
`from_checkpoint_id`, it goes `initializing` -> `ready`; while ready, each disk is read through an
image transfer with `backup=`; `finalize` ends it (`finalizing` -> `succeeded` or `failed`). Each
backup leaves a checkpoint (`to_checkpoint_id`) on the disks with incremental backup enabled, the
start of the next incremental. The engine removes checkpoints only oldest first.
"""

import logging
import time

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text
from ovirt.polling import retry_engine, wait_for
from ovirt.vms import last_event, vm_service

log = logging.getLogger("ovirt")

BACKUP_PREFIX = "ovirt-backup"  # descriptions of our VM backups start with this, so leftovers can be found
OPEN_BACKUP_PHASES = (
    types.BackupPhase.INITIALIZING,
    types.BackupPhase.STARTING,
    types.BackupPhase.READY,
)
# vdsm ends a backup by stopping the NBD exports and removing the scratch disks; on a loaded host
# that takes minutes, and the engine shows `finalizing` all along.
FINALIZE_TIMEOUT = 3600
READY_TIMEOUT = 900


class BackupFailed(EngineError):
    """The engine refused a VM backup (`code`: its HTTP status), or the backup failed before it
    was ready (`code` None)."""

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


def backups_service(connection, vm_id: str):
    return vm_service(connection, vm_id).backups_service()


def start_backup(
    connection,
    vm_id: str,
    *,
    disk_ids: list[str],
    from_checkpoint_id: str | None = None,
    description: str,
    require_consistency: bool = False,
    job=None,
) -> types.Backup:
    """Start a VM backup of these disks and wait until it is `ready`; returns the ready backup.

    It is recorded on the job as soon as the engine answers, so a worker that dies while it is
    open leaves a record for the reaper. Raises BackupFailed with the engine's reason (the fault,
    or the last event it logged about the VM) when it is refused or fails."""
    service = backups_service(connection, vm_id)
    spec = types.Backup(
        disks=[types.Disk(id=d) for d in disk_ids],
        from_checkpoint_id=from_checkpoint_id,
        description=f"{BACKUP_PREFIX}: {description}",
    )
    try:
        before = {b.id for b in service.list()}
        backup = retry_engine(
            lambda: service.add(spec, require_consistency=True if require_consistency else None),
            what="Starting the VM backup",
            job=job,
            # Asked again after a server error only if the engine did not start it meanwhile: a VM
            # has one backup at a time, and a second start would be refused or left open.
            idempotent=False,
            made=lambda: next(
                (b for b in service.list() if b.id not in before and b.description == spec.description), None
            ),
        )
    except sdk.Error as e:
        raise BackupFailed(f"The engine refused the VM backup: {fault_text(e)}", code=getattr(e, "code", 0)) from None
    if job is not None:
        job.remember_engine_object("backup", backup.id, vm=vm_id)
    one = service.backup_service(backup.id)

    def ready():
        try:
            current = one.get()
        except sdk.NotFoundError:
            raise BackupFailed(
                f"The engine dropped VM backup {backup.id} before it was ready: {last_event(connection, vm_id)}"
            ) from None
        if current.phase == types.BackupPhase.FAILED:
            why = last_event(connection, vm_id, since=current.creation_date)
            raise BackupFailed(f"The VM backup failed to start: {why}")
        return current if current.phase == types.BackupPhase.READY else None

    try:
        return wait_for(ready, what="the VM backup to be ready", timeout=READY_TIMEOUT, job=job)
    except BaseException as failure:
        # Failed, cancelled or timed out before ready: it must not stay open on the engine.
        try:
            finalize_backup(connection, vm_id, backup.id, job=job)
        except Exception as e:
            failure.add_note(f"Cleanup: finalizing VM backup {backup.id} failed: {fault_text(e).rstrip('.')}.")
            log.warning("finalizing backup %s failed: %s", backup.id, e)
        raise


def backup_disks(connection, vm_id: str, backup_id: str) -> dict[str, types.Disk]:
    """disk id -> the backup's disk, whose `backup_mode` says whether the engine serves only the
    changes since the checkpoint (incremental) or the whole disk (full)."""
    disks = backups_service(connection, vm_id).backup_service(backup_id).disks_service().list()
    return {d.id: d for d in disks}


def finalize_backup(connection, vm_id: str, backup_id: str, *, job=None) -> None:
    """Finalize a VM backup and wait until it has ended; an ended or vanished backup is fine.

    A long `finalizing` is waited out (told once on the job); a backup that fails while finalizing
    raises EngineError with the engine's last event about the VM (one that had failed before is
    simply over)."""
    service = backups_service(connection, vm_id).backup_service(backup_id)
    try:
        current = service.get()
    except sdk.NotFoundError:
        _forget(job, backup_id)
        return
    if current.phase == types.BackupPhase.FAILED:
        _forget(job, backup_id)
        return
    asked = current.phase in OPEN_BACKUP_PHASES
    if asked:
        try:
            retry_engine(service.finalize, what="Finalizing the VM backup", job=job)
        except sdk.NotFoundError:
            _forget(job, backup_id)
            return
        except sdk.Error as e:
            # A backup stopped before it was ready is refused with 400 yet ends (failed): wait for
            # that end; a backup the refusal left open is the engine's to explain.
            try:
                still_open = service.get().phase in OPEN_BACKUP_PHASES
            except sdk.NotFoundError:
                still_open = False
            if still_open:
                raise EngineError(f"The engine refused to finalize VM backup {backup_id}: {fault_text(e)}") from None
            asked = False
    started, told = time.monotonic(), False

    def ended():
        nonlocal told
        try:
            phase = service.get().phase
        except sdk.NotFoundError:
            return "gone"
        if phase in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED):
            return phase.value
        if phase == types.BackupPhase.FINALIZING and not told and time.monotonic() - started > 30:
            told = True
            if job is not None:
                job.log("info", f"The engine is still finalizing VM backup {backup_id}; waiting for it")
        return None

    phase = wait_for(ended, what="the VM backup to be finalized", timeout=FINALIZE_TIMEOUT, job=job, cancellable=False)
    _forget(job, backup_id)
    if phase == types.BackupPhase.FAILED.value and asked:
        reason = last_event(connection, vm_id)
        raise EngineError(f"The engine failed VM backup {backup_id} while finalizing it: {reason}")


def _forget(job, backup_id: str) -> None:
    if job is not None:
        job.forget_engine_object(backup_id)


def open_backups(connection, vm_id: str) -> list[types.Backup]:
    """The VM's backups that are not over (initializing, starting or ready); none on an engine
    older than 4.4, which has no such collection."""
    try:
        found = backups_service(connection, vm_id).list()
    except sdk.NotFoundError:
        return []
    return [b for b in found if b.phase in OPEN_BACKUP_PHASES]


def checkpoints(connection, vm_id: str) -> list[types.Checkpoint]:
    """The VM's checkpoints, oldest first (each one's parent comes before it)."""
    found = vm_service(connection, vm_id).checkpoints_service().list()
    by_id = {c.id: c for c in found}
    ordered, seen = [], set()
    # The chain order is the truth; a creation date can tie within a second.
    roots = sorted(
        (c for c in found if not c.parent_id or c.parent_id not in by_id),
        key=lambda c: c.creation_date.timestamp() if c.creation_date else 0,
    )
    children: dict[str, list[types.Checkpoint]] = {}
    for c in found:
        if c.parent_id in by_id:
            children.setdefault(c.parent_id, []).append(c)
    stack = list(reversed(roots))
    while stack:
        c = stack.pop()
        if c.id in seen:
            continue
        seen.add(c.id)
        ordered.append(c)
        stack.extend(reversed(children.get(c.id, [])))
    return ordered + [c for c in found if c.id not in seen]


def remove_checkpoint(connection, vm_id: str, checkpoint_id: str, *, job=None) -> None:
    """Remove one checkpoint (the oldest: the engine refuses others) and wait until it is gone."""
    service = vm_service(connection, vm_id).checkpoints_service().checkpoint_service(checkpoint_id)
    try:
        retry_engine(service.remove, what="Removing the checkpoint", job=job)
    except sdk.NotFoundError:
        return
    except sdk.Error as e:
        raise EngineError(f"The engine refused to remove checkpoint {checkpoint_id}: {fault_text(e)}") from None

    def gone():
        try:
            service.get()
        except sdk.NotFoundError:
            return True
        return False

    wait_for(gone, what=f"checkpoint {checkpoint_id} to be removed", timeout=600, job=job, cancellable=False)


def remove_checkpoints_before(connection, vm_id: str, *, keep: set[str], job=None) -> list[str]:
    """Remove the VM's checkpoints oldest first, up to the first one in `keep`; a checkpoint after
    a kept one stays, as the engine removes only the oldest. Returns the ids removed."""
    removed = []
    for checkpoint in checkpoints(connection, vm_id):
        if checkpoint.id in keep:
            break
        remove_checkpoint(connection, vm_id, checkpoint.id, job=job)
        removed.append(checkpoint.id)
    return removed
