"""Snapshots: taken quiesced with a crash-consistent fallback, removed with the merge awaited."""

import time

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text, freeze_failed
from ovirt.polling import retry_conflicts, wait_for
from ovirt.vms import event_naming, last_event, vm_disks, vm_service

SNAPSHOT_PREFIX = "ovirt-backup"  # descriptions of our snapshots start with this, so leftovers can be found


def create_snapshot(connection, vm_id: str, *, description: str, quiesce: bool, job=None) -> tuple[types.Snapshot, str]:
    """Take a disk-only snapshot; quiesced first, and crash-consistent if the guest cannot freeze.

    Returns the snapshot (status ok) and the consistency reached: "filesystem" or "crash". The
    snapshot's id is passed to `job.remember_engine_object` as soon as the engine answers, so a
    worker that dies while it is being made still leaves a record of it.
    """
    snapshots = vm_service(connection, vm_id).snapshots_service()
    spec = types.Snapshot(description=f"{SNAPSHOT_PREFIX}: {description}", persist_memorystate=False)
    consistency = "filesystem" if quiesce else "crash"
    try:
        snap = retry_conflicts(
            lambda: snapshots.add(spec, query={"require_consistency": "true"} if quiesce else None),
            what="Creating the snapshot",
            job=job,
        )
    except sdk.Error as e:
        if not quiesce or not freeze_failed(fault_text(e)):
            raise EngineError(f"The engine refused the snapshot: {fault_text(e)}") from None
        if job:
            job.log("warning", f"Quiescing failed ({fault_text(e)}); taking a crash-consistent snapshot instead.")
        consistency = "crash"
        snap = retry_conflicts(lambda: snapshots.add(spec), what="Creating the snapshot", job=job)
    if job is not None:
        job.remember_engine_object("snapshot", snap.id, vm=vm_id, name=spec.description)

    service = snapshots.snapshot_service(snap.id)

    def ready():
        try:
            current = service.get()
        except sdk.NotFoundError:
            _forget(job, snap.id)  # the engine dropped it: nothing of it is left
            raise EngineError(f"The engine failed to create the snapshot: {last_event(connection, vm_id)}") from None
        return current if current.snapshot_status == types.SnapshotStatus.OK else None

    return wait_for(ready, what="the snapshot to be ready", job=job), consistency


def remove_snapshot(connection, vm_id: str, snapshot_id: str, *, job=None, wait: bool = True) -> None:
    """Remove a snapshot (the engine merges it) and wait until it is gone; gone already is fine.

    Its record on the job goes once it is gone (without `wait`, once the engine took the removal:
    the merge is then the engine's to finish); a removal refused or unanswered, or a merge that
    failed, raises EngineError in words and keeps the record."""
    service = vm_service(connection, vm_id).snapshots_service().snapshot_service(snapshot_id)
    try:
        retry_conflicts(service.remove, what="Removing the snapshot", job=job)
    except sdk.NotFoundError:
        _forget(job, snapshot_id)
        return
    except sdk.Error as e:
        raise EngineError(f"Removing snapshot {snapshot_id} failed: {fault_text(e).rstrip('.')}.") from None
    if not wait:
        _forget(job, snapshot_id)
        return

    seen: list[types.Snapshot] = []

    def gone():
        try:
            current = service.get()
        except sdk.NotFoundError:
            return True
        seen[:] = [current]
        # The engine keeps a snapshot locked while it merges it, and unlocks it if the merge fails.
        return "failed" if current.snapshot_status == types.SnapshotStatus.OK else False

    outcome = wait_for(gone, what="the snapshot to be merged and removed", timeout=3600, job=job, cancellable=False)
    illegal = [d.alias for d in vm_disks(connection, vm_id) if d.status == types.DiskStatus.ILLEGAL]
    if outcome == "failed":
        name = seen[0].description or snapshot_id
        # The engine unlocks the snapshot a moment before it logs why ("Failed to delete snapshot 'NAME'...").
        deadline, why = time.monotonic() + 10, ""
        while not (why := event_naming(connection, vm_id, f"'{name}'")) and time.monotonic() < deadline:
            time.sleep(0.2)
        illegal_now = f" Disk {', '.join(illegal)} is illegal now; check it on the engine." if illegal else ""
        raise EngineError(
            f"The engine could not remove snapshot '{name}' ({snapshot_id}): "
            f"{why.rstrip('.') or 'it logged no reason; see the VM events there'}. The snapshot is still there."
            f"{illegal_now}"
        )
    _forget(job, snapshot_id)
    if illegal:
        raise EngineError(f"Merging the snapshot left disk {', '.join(illegal)} illegal on the engine; check it there.")


def _forget(job, snapshot_id: str) -> None:
    if job is not None:
        job.forget_engine_object(snapshot_id)


def snapshot_disk_images(connection, vm_id: str, snapshot_id: str) -> dict[str, str]:
    """disk id -> image (volume) id of that disk in the snapshot, i.e. its disk snapshot id."""
    disks = vm_service(connection, vm_id).snapshots_service().snapshot_service(snapshot_id).disks_service().list()
    return {d.id: d.image_id for d in disks}


def snapshot_ovf(connection, vm_id: str, snapshot_id: str) -> str:
    """The VM's OVF as it was when the snapshot was taken (the VM's current one if the engine has none)."""
    service = vm_service(connection, vm_id)
    snap = service.snapshots_service().snapshot_service(snapshot_id).get(query={"all_content": "true"})
    config = snap.initialization.configuration if snap.initialization else None
    if config is None or not config.data:
        config = service.get(all_content=True).initialization.configuration
    return config.data
