"""Snapshots: taken quiesced with a crash-consistent fallback, removed with the merge awaited."""

import time

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text, freeze_failed
from ovirt.polling import retry_engine, wait_for
from ovirt.vms import event_naming, last_event, vm_disks, vm_service

SNAPSHOT_PREFIX = "ovirt-backup"  # descriptions of our snapshots start with this, so leftovers can be found


class SnapshotFailed(EngineError):
    """The engine accepted a snapshot and then failed it: nothing of it is left."""


def create_snapshot(
    connection, vm_id: str, *, description: str, quiesce: bool, job=None
) -> tuple[types.Snapshot, str, str]:
    """Take a disk-only snapshot; quiesced first, and crash-consistent if the guest cannot freeze.

    The engine fails a quiesced snapshot two ways: it refuses it at once, or it accepts it and
    its live snapshot fails later with an event naming the freeze (then the snapshot is gone).
    Either way a crash-consistent snapshot is taken instead. Returns the snapshot (status ok), the
    consistency reached ("filesystem" or "crash") and, when quiescing was asked for and failed,
    why the snapshot is crash-consistent ("" otherwise). The snapshot's id is passed to
    `job.remember_engine_object` as soon as the engine answers, so a worker that dies while it is
    being made still leaves a record of it.
    """
    if not quiesce:
        return _take_snapshot(connection, vm_id, description=description, quiesce=False, job=job), "crash", ""
    try:
        return _take_snapshot(connection, vm_id, description=description, quiesce=True, job=job), "filesystem", ""
    except SnapshotFailed:
        freeze = _freeze_event(connection, vm_id, f"{SNAPSHOT_PREFIX}: {description}")
        if not freeze:
            raise
        why = f"the engine accepted the quiesced snapshot, then failed it: {freeze.rstrip('.')}"
    except _FreezeRefused as e:
        why = f"the engine refused the quiesced snapshot: {e}"
    if job:
        job.log("warning", f"Quiescing failed ({why}); taking a crash-consistent snapshot instead.")
    snapshot = _take_snapshot(connection, vm_id, description=description, quiesce=False, job=job)
    return snapshot, "crash", f"Crash-consistent, not quiesced: {why}."


class _FreezeRefused(Exception):
    """The engine refused a quiesced snapshot at once because the guest cannot freeze."""


def _freeze_event(connection, vm_id: str, name: str) -> str:
    """The engine's event saying the live snapshot `name` failed on the guest's freeze ("" if none):
    USER_CREATE_LIVE_SNAPSHOT_FINISHED_FAILURE, "Failed to create live snapshot 'NAME' for VM 'VM' due
    to: Unable to freeze guest filesystems. ..." (vdsm's freezeErr)."""
    event = event_naming(connection, vm_id, f"Failed to create live snapshot '{name}'")
    return event if freeze_failed(event.partition(" due to: ")[2]) else ""


def _take_snapshot(connection, vm_id: str, *, description: str, quiesce: bool, job) -> types.Snapshot:
    snapshots = vm_service(connection, vm_id).snapshots_service()
    spec = types.Snapshot(description=f"{SNAPSHOT_PREFIX}: {description}", persist_memorystate=False)
    # A snapshot the engine took before its answer failed (a 5xx from its web server) is found and
    # adopted rather than a second one taken: ours is a regular one with this description that was not
    # there before the request (the Active VM's id is left out: the engine lends it to a new snapshot).
    before = {s.id for s in snapshots.list() if s.snapshot_type != types.SnapshotType.ACTIVE}

    def made() -> types.Snapshot | None:
        return next(
            (
                s
                for s in snapshots.list()
                if s.snapshot_type == types.SnapshotType.REGULAR
                and s.id not in before
                and s.description == spec.description
            ),
            None,
        )

    try:
        snap = retry_engine(
            lambda: snapshots.add(spec, query={"require_consistency": "true"} if quiesce else None),
            what="Creating the snapshot",
            job=job,
            idempotent=False,
            made=made,
        )
    except sdk.Error as e:
        if quiesce and freeze_failed(fault_text(e)):
            raise _FreezeRefused(fault_text(e)) from None
        raise EngineError(f"The engine refused the snapshot: {fault_text(e)}") from None
    if job is not None:
        job.remember_engine_object("snapshot", snap.id, vm=vm_id, name=spec.description)

    service = snapshots.snapshot_service(snap.id)

    def ready():
        try:
            current = service.get()
        except sdk.NotFoundError:
            current = None
        # A snapshot the engine failed is gone, and its id is the Active VM snapshot's again (the
        # engine lends the Active VM's id to a new snapshot): neither is the snapshot asked for.
        if current is None or current.snapshot_type == types.SnapshotType.ACTIVE:
            _forget(job, snap.id)  # nothing of it is left
            # From the snapshot's own date, the engine's clock: the node's may differ.
            events = last_event(connection, vm_id, since=snap.date)
            raise SnapshotFailed(f"The engine failed to create the snapshot: {events}")
        return current if current.snapshot_status == types.SnapshotStatus.OK else None

    return wait_for(ready, what="the snapshot to be ready", job=job)


def remove_snapshot(connection, vm_id: str, snapshot_id: str, *, job=None, wait: bool = True) -> None:
    """Remove a snapshot (the engine merges it) and wait until it is gone; gone already is fine.

    Its record on the job goes once it is gone (without `wait`, once the engine took the removal:
    the merge is then the engine's to finish); a removal refused or unanswered, or a merge that
    failed, raises EngineError in words and keeps the record."""
    service = vm_service(connection, vm_id).snapshots_service().snapshot_service(snapshot_id)
    try:
        retry_engine(service.remove, what="Removing the snapshot", job=job)
    except sdk.NotFoundError:
        _forget(job, snapshot_id)
        return
    except sdk.Error as e:
        if _is_active_vm(service):
            # A snapshot the engine failed gives its id back to the Active VM (see create_snapshot):
            # what was recorded under that id is gone.
            _forget(job, snapshot_id)
            return
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


def _is_active_vm(service) -> bool:
    try:
        return service.get().snapshot_type == types.SnapshotType.ACTIVE
    except sdk.Error:
        return False


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
