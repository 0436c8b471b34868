"""Engine helpers every strategy shares: snapshots with the quiesce fallback, image transfer
life cycle, waiting on asynchronous states, progress, and a cleanup stack that always runs."""

import errno
import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from jobs.runner import JobCancelled, JobError

log = logging.getLogger("strategies")

SNAPSHOT_PREFIX = "ovirt-backup"  # descriptions of our snapshots start with this, so leftovers can be found
TRANSFER_INACTIVITY = 120
OPEN_TRANSFER_PHASES = (
    types.ImageTransferPhase.INITIALIZING,
    types.ImageTransferPhase.TRANSFERRING,
    types.ImageTransferPhase.PAUSED_SYSTEM,
    types.ImageTransferPhase.PAUSED_USER,
)


class Cleanup:
    """Undo steps registered as work proceeds; run newest first, always, each one guarded."""

    def __init__(self, job=None):
        self.job = job
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, fn: Callable[[], None]) -> Callable[[], None]:
        self._steps.append((what, fn))
        return fn

    def discard(self, fn: Callable[[], None]) -> None:
        """Drop a step: pass the object `add` returned (a bound method is a new object each time)."""
        self._steps = [(w, f) for w, f in self._steps if f is not fn]

    def commit(self) -> None:
        """The work succeeded: forget the undo steps."""
        self._steps.clear()

    def run(self) -> None:
        while self._steps:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as e:
                log.exception("cleanup step %s failed", what)
                if self.job:
                    self.job.log("error", f"Cleanup: {what} failed: {e}")

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, *exc) -> None:
        self.run()


def wait_for(check: Callable[[], object], *, what: str, timeout: float = 600, job=None, interval: float = 0.01):
    """Poll `check` until it returns something truthy; honours the job's cancel flag.

    Polls start fast and back off gently (x1.25, at most 1 s apart), so a step the engine ends
    quickly costs about a fifth more than its own time, and a long merge a request a second."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = check()
        if value:
            return value
        if job is not None:
            job.check_cancel()
        if time.monotonic() > deadline:
            raise JobError(f"Timed out after {timeout:.0f}s waiting for {what}.")
        time.sleep(delay)
        delay = min(delay * 1.25, 1.0)


def retry_conflicts(call: Callable[[], object], *, what: str, attempts: int = 6, job=None):
    """Retry a call the engine refuses with 409 (snapshot being created, disk locked) with backoff."""
    delay = 1.0
    for attempt in range(attempts):
        try:
            return call()
        except sdk.Error as e:
            if getattr(e, "code", None) != 409 or attempt == attempts - 1:
                raise
            if job:
                job.log("warning", f"{what}: the engine answered busy ({fault_text(e)}); retrying in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2


def fault_text(error: Exception) -> str:
    fault = getattr(error, "fault", None)
    if fault is not None and fault.detail:
        return fault.detail.strip("[]")
    return str(error)


def vm_service(connection, vm_id: str):
    return connection.system_service().vms_service().vm_service(vm_id)


def create_snapshot(connection, vm_id: str, *, description: str, quiesce: bool, job=None) -> tuple[types.Snapshot, str]:
    """Take a disk-only snapshot; quiesced first, and crash-consistent if the guest cannot freeze.

    Returns the snapshot (status ok) and the consistency reached: "filesystem" or "crash".
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
        if not quiesce or "freeze" not in fault_text(e).lower():
            raise JobError(f"The engine refused the snapshot: {fault_text(e)}") from None
        if job:
            job.log("warning", f"Quiescing failed ({fault_text(e)}); taking a crash-consistent snapshot instead.")
        consistency = "crash"
        snap = retry_conflicts(lambda: snapshots.add(spec), what="Creating the snapshot", job=job)

    service = snapshots.snapshot_service(snap.id)

    def ready():
        try:
            current = service.get()
        except sdk.NotFoundError:
            raise JobError(f"The engine failed to create the snapshot: {last_event(connection, vm_id)}") from None
        return current if current.snapshot_status == types.SnapshotStatus.OK else None

    return wait_for(ready, what="the snapshot to be ready", job=job), consistency


def remove_snapshot(connection, vm_id: str, snapshot_id: str, *, job=None, wait: bool = True) -> None:
    """Remove a snapshot (the engine merges it) and wait until it is gone; gone already is fine."""
    service = vm_service(connection, vm_id).snapshots_service().snapshot_service(snapshot_id)
    try:
        retry_conflicts(service.remove, what="Removing the snapshot", job=job)
    except sdk.NotFoundError:
        return
    if not wait:
        return

    def gone():
        try:
            service.get()
        except sdk.NotFoundError:
            return True
        return False

    wait_for(gone, what="the snapshot to be merged and removed", timeout=3600)
    failed = [d for d in vm_disks(connection, vm_id) if d.status == types.DiskStatus.ILLEGAL]
    if failed:
        raise JobError(f"Merging the snapshot left disk {failed[0].alias} illegal on the engine; check it there.")


def last_event(connection, vm_id: str) -> str:
    try:
        vm = vm_service(connection, vm_id).get()
        events = connection.system_service().events_service().list(search=f"vm.name={vm.name}", max=5)
    except sdk.Error:
        return "no detail available"
    errors = [e for e in events if e.severity in (types.LogSeverity.ERROR, types.LogSeverity.WARNING)]
    return (errors or events)[0].description if (errors or events) else "no detail available"


def vm_disks(connection, vm_id: str) -> list[types.Disk]:
    attachments = vm_service(connection, vm_id).disk_attachments_service().list(follow="disk")
    return [a.disk for a in attachments]


def snapshot_disk_images(connection, vm_id: str, snapshot_id: str) -> dict[str, str]:
    """disk id -> image (volume) id of that disk in the snapshot, i.e. its disk snapshot id."""
    disks = vm_service(connection, vm_id).snapshots_service().snapshot_service(snapshot_id).disks_service().list()
    return {d.id: d.image_id for d in disks}


def cancel_open_transfers(connection, disk_ids: set[str], *, job=None) -> None:
    """Cancel the image transfers an interrupted run left open on these disks, and wait until each
    has ended, so the disks are unlocked for what comes next."""
    transfers = connection.system_service().image_transfers_service()
    for t in transfers.list():
        if t.disk is not None and t.disk.id in disk_ids and t.phase in OPEN_TRANSFER_PHASES:
            if job:
                job.log("warning", f"Cancelling image transfer {t.id} left by an earlier run ({t.phase.value})")
            _end_transfer(transfers.image_transfer_service(t.id), cancel=True)


def clean_leftovers(connection, vm_id: str, *, keep: set[str], job=None) -> None:
    """Close what an interrupted run left on the engine: our snapshots not kept, transfers on the VM's disks."""
    cancel_open_transfers(connection, {d.id for d in vm_disks(connection, vm_id)}, job=job)
    for snap in vm_service(connection, vm_id).snapshots_service().list():
        if (snap.description or "").startswith(SNAPSHOT_PREFIX) and snap.id not in keep:
            if job:
                job.log("warning", f"Removing snapshot '{snap.description}' left by an earlier run")
            remove_snapshot(connection, vm_id, snap.id, job=job)


def undo_engine_objects(connection, objects: list[dict], *, job=None) -> list[str]:
    """Undo, newest first, what a job whose worker died recorded with `Job.remember_engine_object`:
    close image transfers still open on its disks, remove the VM and disks it created, and give a
    VM it renamed aside its name back. Returns what could not be undone, for people to see."""
    system = connection.system_service()
    say = job.log if job else lambda level, message: log.info(message)
    cancel_open_transfers(connection, {o["id"] for o in objects if o["kind"] == "disk"}, job=job)
    failures = []
    for obj in reversed(objects):
        kind, engine_id, name = obj["kind"], obj["id"], obj.get("name", obj["id"])
        try:
            if kind == "vm":
                retry_conflicts(vm_service(connection, engine_id).remove, what=f"Removing VM {name}", job=job)
                say("warning", f"Removed VM {name} ({engine_id}), which the stopped worker had created")
            elif kind == "disk":
                remove_disk(connection, engine_id, job=job)
                say("warning", f"Removed disk {name} ({engine_id}), which the stopped worker had created")
            elif kind == "renamed_vm":
                if any(v.name == name for v in system.vms_service().list(search=f"name={name}")):
                    failures.append(f"VM {engine_id} keeps its temporary name: another VM is named {name} now")
                    continue
                vm_service(connection, engine_id).update(types.Vm(name=name))
                say("warning", f"Gave VM {engine_id} its name {name} back")
        except sdk.NotFoundError:
            continue  # gone already (a VM's removal takes its disks; the engine drops a cancelled upload's)
        except (sdk.Error, JobError) as e:
            failures.append(f"{kind} {name} ({engine_id}): {fault_text(e)}")
    for failure in failures:
        say("error", f"Could not undo: {failure}")
    return failures


class Progress:
    """imageio's progress interface. Client threads only count; one reporter thread writes the
    job's bytes done (its heartbeat) and notices a cancel request, so no client thread opens a
    database connection."""

    def __init__(self, job, *, base: int, total: int, on_cancel: Callable[[], None], interval: float = 0.5):
        self.job = job
        self.base = base
        self.total = total
        self.done = 0
        self.size = None
        self.cancelled = False
        self._on_cancel = on_cancel
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True)

    def update(self, n: int) -> None:
        self.done += n  # one int add; the GIL makes it atomic enough for a progress figure

    def _report(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self._interval):
                self._flush()
        finally:
            connection.close()

    def _flush(self) -> None:
        if self.job is None:
            return
        self.job.set_progress(self.base + self.done, self.total)  # also the heartbeat
        if not self.cancelled and self.job.cancel_is_requested():
            # Cancelling the transfer on the engine removes the ticket, which stops the client.
            self.cancelled = True
            self.job.log("warning", "Cancel requested: cancelling the image transfer")
            self._on_cancel()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.job is not None:
            self.job.set_progress(self.base + self.done, self.total)


class TransferHandle:
    """An open image transfer: the engine's entity, its service, and after it ends, bytes moved."""

    def __init__(self, transfer, service):
        self.transfer = transfer
        self.service = service
        self.transferred: int | None = None


@contextmanager
def tracked_transfer(connection, *, job, base: int, total: int, what: str, **transfer):
    """An image transfer whose bytes count toward the job's progress and which a cancel request
    stops; the imageio client's errors inside become JobError naming `what` ("uploading disk x")."""
    with (
        image_transfer(connection, job=job, **transfer) as handle,
        Progress(job, base=base, total=total, on_cancel=handle.service.cancel) as progress,
    ):
        try:
            yield handle, progress
        except JobError:
            raise
        except Exception as e:
            if progress.cancelled:
                raise JobCancelled() from None
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise JobError(f"The destination ran out of space while {what}.") from None
            raise JobError(f"{what[0].upper()}{what[1:]} failed: {fault_text(e)}") from None


def remove_disk(connection, disk_id: str, *, job=None) -> None:
    """Remove a disk, waiting out a brief lock; gone already is fine."""
    service = connection.system_service().disks_service().disk_service(disk_id)
    try:
        retry_conflicts(service.remove, what="Removing the disk", job=job)
    except sdk.NotFoundError:
        pass


@contextmanager
def image_transfer(
    connection,
    *,
    disk_id: str | None = None,
    snapshot_id: str | None = None,
    direction: str = "download",
    fmt: str = "raw",
    shallow: bool = False,
    job=None,
):
    """An image transfer from creation to `finished_success`; cancelled on any error."""
    transfers = connection.system_service().image_transfers_service()
    spec = types.ImageTransfer(
        disk=types.Disk(id=disk_id) if disk_id else None,
        snapshot=types.DiskSnapshot(id=snapshot_id) if snapshot_id else None,
        direction=types.ImageTransferDirection(direction),
        format=types.DiskFormat(fmt),
        shallow=shallow or None,
        inactivity_timeout=TRANSFER_INACTIVITY,
        timeout_policy=types.ImageTransferTimeoutPolicy.CANCEL,
    )
    try:
        transfer = retry_conflicts(lambda: transfers.add(spec), what="Creating the image transfer", job=job)
    except sdk.Error as e:
        raise JobError(f"The engine refused the image transfer: {fault_text(e)}") from None
    service = transfers.image_transfer_service(transfer.id)

    def started():
        current = service.get()
        if current.phase == types.ImageTransferPhase.INITIALIZING:
            return None
        return current

    try:
        transfer = wait_for(started, what="the image transfer to start", timeout=300, job=job)
        if transfer.phase != types.ImageTransferPhase.TRANSFERRING:
            raise JobError(f"The image transfer did not start: the engine put it in phase {transfer.phase.value}.")
        handle = TransferHandle(transfer, service)
        yield handle
    except BaseException:
        _end_transfer(service, cancel=True)
        raise
    phase, handle.transferred = _end_transfer(service, cancel=False)
    # An engine may forget a finished transfer at once; gone after finalize means it ended well.
    if phase not in ("finished_success", "gone"):
        raise JobError(f"The engine did not finish the image transfer ({phase}).")


def _end_transfer(service, *, cancel: bool) -> tuple[str, int | None]:
    """Finalize (or cancel) and wait for the end: (final phase, bytes the engine says moved)."""
    try:
        (service.cancel if cancel else service.finalize)()
    except sdk.NotFoundError:
        return "gone", None
    except sdk.Error as e:
        if not cancel:
            raise JobError(f"Finalizing the image transfer failed: {fault_text(e)}") from None
        log.warning("cancelling transfer failed: %s", e)

    def ended():
        try:
            current = service.get()
        except sdk.NotFoundError:
            return "gone", None
        if current.phase in (types.ImageTransferPhase.FINISHED_SUCCESS, types.ImageTransferPhase.FINISHED_FAILURE):
            return current.phase.value, current.transferred
        return None

    try:
        return wait_for(ended, what="the image transfer to end", timeout=600)
    except JobError:
        return "timeout", None
