"""Image transfers: created, awaited, finalized or cancelled, with bytes counted toward a job."""

import errno
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import contextmanager
from urllib.parse import urlparse

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from core.errors import Cancelled, OperatorError
from ovirt.errors import EngineError, engine_trouble, failure_words, fault_text
from ovirt.polling import retry_engine, wait_for

log = logging.getLogger("ovirt")

MiB = 1024**2
TRANSFER_INACTIVITY = 120
OPEN_TRANSFER_PHASES = (
    types.ImageTransferPhase.INITIALIZING,
    types.ImageTransferPhase.TRANSFERRING,
    types.ImageTransferPhase.PAUSED_SYSTEM,
    types.ImageTransferPhase.PAUSED_USER,
)


class Progress:
    """imageio's progress interface. Client threads only count; one reporter thread writes the
    job's bytes done (its heartbeat) and notices a cancel request, so no client thread opens a
    database connection."""

    def __init__(
        self,
        job,
        *,
        base: int,
        total: int,
        on_cancel: Callable[[], None],
        interval: float = 0.5,
        direction: str = "download",
    ):
        self.job = job
        self.direction = direction
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
        from django.db import OperationalError, connection

        try:
            while not self._stop.wait(self._interval):
                try:
                    self._flush()
                except OperationalError as e:
                    # A busy database (SQLite's write lock held by another writer past its timeout)
                    # costs one progress write, not the transfer: the next comes an interval later.
                    log.info("progress of job %s not written this time: %s", getattr(self.job, "pk", None), e)
        finally:
            connection.close()  # the reporter's own database connection

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
    """An open image transfer: the engine's entity, its service, the imageio URL its data moves
    through (`url`, chosen by `tracked_transfer`), and after it ends, bytes moved."""

    def __init__(self, transfer, service):
        self.transfer = transfer
        self.service = service
        self.url: str = transfer.transfer_url
        self.transferred: int | None = None


def imageio_url(connection, transfer, *, job=None, what: str, timeout: float = 10) -> str:
    """The URL to move a transfer's data through, chosen as ovirt-img chooses it: the host's imageio
    (`transfer_url`) when this node can open a connection to it, else the engine's imageio proxy
    (`proxy_url`), slower (every byte crosses the engine) but reachable wherever the engine's API is.
    The job says which path it took and why."""
    host = _host_name(connection, transfer)
    direct = urlparse(transfer.transfer_url or "")
    if direct.hostname:
        try:
            _open_tls(direct, ca_file=getattr(connection, "ca_file", None), secure=_secure(connection), timeout=timeout)
        except OSError as e:
            why = f"host {host}'s imageio at {direct.netloc} cannot be reached from this node ({failure_words(e)})"
        else:
            if job is not None:
                upload = transfer.direction == types.ImageTransferDirection.UPLOAD
                where = f"{'to' if upload else 'from'} host {host}'s imageio ({direct.netloc})"
                job.log("info", f"{what[0].upper()}{what[1:]} directly {where}")
            return transfer.transfer_url
    else:
        why = f"the engine gave no address of host {host}'s imageio"
    proxy = urlparse(transfer.proxy_url or "")
    if not proxy.hostname:
        raise EngineError(
            f"Cannot start {what}: {why}, and the engine offers no imageio proxy. Let this node reach the "
            "hosts' imageio (port 54322) or enable the engine's imageio proxy (port 54323)."
        )
    if job is not None:
        job.log("info", f"{what[0].upper()}{what[1:]} through the engine's imageio proxy ({proxy.netloc}): {why}")
    return transfer.proxy_url


def _host_name(connection, transfer) -> str:
    """The transfer's host by name; its id when the user may not read hosts."""
    host_id = transfer.host.id if transfer.host is not None else None
    if not host_id:
        return "(unknown)"
    try:
        return connection.system_service().hosts_service().host_service(host_id).get().name or host_id
    except sdk.Error:
        return host_id


def _secure(connection) -> bool:
    return bool(getattr(connection, "verify_tls", True))


def _open_tls(url, *, ca_file: str | None, secure: bool, timeout: float) -> None:
    """Open (and close) a TLS connection to an imageio daemon: what ovirt-img's client does before it
    falls back to the proxy, less the HTTP request; OSError when it cannot."""
    context = ssl.create_default_context(cafile=ca_file if secure else None)
    if not secure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=url.hostname),
    ):
        pass


@contextmanager
def tracked_transfer(connection, *, job, base: int, total: int, what: str, **transfer):
    """An image transfer whose bytes count toward the job's progress and which a cancel request
    stops; the imageio client's errors inside become EngineError naming `what` ("uploading disk x")."""
    with (
        image_transfer(connection, job=job, **transfer) as handle,
        Progress(
            job,
            base=base,
            total=total,
            on_cancel=handle.service.cancel,
            direction=transfer.get("direction", "download"),
        ) as progress,
    ):
        try:
            handle.url = imageio_url(connection, handle.transfer, job=job, what=what)
            yield handle, progress
            if progress.cancelled:
                # Cancelled as the copy ended: the transfer is cancelled on the engine, the point is not made.
                raise Cancelled()
        except (OperatorError, Cancelled):
            raise
        except Exception as e:
            if progress.cancelled:
                raise Cancelled() from None
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise EngineError(f"The destination ran out of space while {what}.") from None
            raise EngineError(transfer_failure(connection, e, what=what, progress=progress)) from None


def transfer_failure(connection, error: BaseException, *, what: str, progress: "Progress") -> str:
    """Why a transfer stopped, in one sentence: an engine that went away is named with how far the
    transfer got and what to do; anything else is `what` failed, with the error in words."""
    trouble = engine_trouble(error)
    if not trouble:
        return f"{what[0].upper()}{what[1:]} failed: {fault_text(error).rstrip('.')}."
    parsed = urlparse(getattr(connection, "url", "") or "")
    engine = f"The engine at {parsed.scheme}://{parsed.netloc}" if parsed.netloc else "The engine"
    moved = f"{progress.done // MiB} MiB"
    if progress.size:
        moved += f" of {progress.size // MiB} MiB"
    moved += " read" if progress.direction == "download" else " written"
    verb = "stopped answering" if trouble == "gone" else "failed"
    after = (
        "Nothing was stored; retry when the engine is up."
        if progress.direction == "download"
        else "What the restore made there is removed once the engine answers again; retry then."
    )
    return f"{engine} {verb} while {what} ({moved}): {fault_text(error).rstrip('.')}. {after}"


@contextmanager
def image_transfer(
    connection,
    *,
    disk_id: str | None = None,
    snapshot_id: str | None = None,
    direction: str = "download",
    fmt: str = "raw",
    shallow: bool = False,
    backup_id: str | None = None,
    job=None,
):
    """An image transfer from creation to `finished_success`; cancelled on any error.

    With `backup_id`, `disk_id`'s data is read from that VM backup's point-in-time view (raw, with
    the changed extents marked dirty for a disk the backup serves incrementally)."""
    transfers = connection.system_service().image_transfers_service()
    spec = types.ImageTransfer(
        disk=types.Disk(id=disk_id) if disk_id else None,
        snapshot=types.DiskSnapshot(id=snapshot_id) if snapshot_id else None,
        direction=types.ImageTransferDirection(direction),
        format=types.DiskFormat(fmt),
        shallow=shallow or None,
        backup=types.Backup(id=backup_id) if backup_id else None,
        inactivity_timeout=TRANSFER_INACTIVITY,
        timeout_policy=types.ImageTransferTimeoutPolicy.CANCEL,
    )
    try:
        # Not asked again after a server error: a transfer the engine made anyway is an open one on the
        # disk, which the next run of the VM cancels (cancel_open_transfers); a second would wait on it.
        transfer = retry_engine(
            lambda: transfers.add(spec), what="Creating the image transfer", job=job, idempotent=False
        )
    except sdk.Error as e:
        raise EngineError(f"The engine refused the image transfer: {fault_text(e)}") from None
    if job is not None:
        job.remember_engine_object("transfer", transfer.id, direction=direction)
    service = transfers.image_transfer_service(transfer.id)

    def started():
        current = service.get()
        if current.phase == types.ImageTransferPhase.INITIALIZING:
            return None
        return current

    try:
        transfer = wait_for(started, what="the image transfer to start", timeout=300, job=job)
        if transfer.phase != types.ImageTransferPhase.TRANSFERRING:
            raise EngineError(f"The image transfer did not start: the engine put it in phase {transfer.phase.value}.")
        handle = TransferHandle(transfer, service)
        yield handle
    except BaseException as failure:
        try:
            ended, _ = end_transfer(service, cancel=True, job=job)
            if job is not None and ended != "timeout":
                job.forget_engine_object(transfer.id)  # ended: nothing of it is left to undo
        except Exception as e:
            # An engine that went away fails the cancel too; the first failure stays the one told.
            failure.add_note(f"Cleanup: cancelling image transfer {transfer.id} failed: {fault_text(e).rstrip('.')}.")
            log.warning("cancelling transfer %s failed: %s", transfer.id, e)
        raise
    try:
        phase, handle.transferred = end_transfer(service, cancel=False, job=job)
    except BaseException as failure:
        # A transfer the engine would not finalize is cancelled, not left open holding its disk's lock
        # (a VM backup cannot be finalized while it is open); its record stays until that is confirmed.
        try:
            end_transfer(service, cancel=True, job=job)
        except Exception as e:
            failure.add_note(f"Cleanup: cancelling image transfer {transfer.id} failed: {fault_text(e).rstrip('.')}.")
        raise
    if job is not None and phase != "timeout":
        job.forget_engine_object(transfer.id)
    # An engine may forget a finished transfer at once; gone after finalize means it ended well.
    if phase not in ("finished_success", "gone"):
        raise EngineError(f"The engine did not finish the image transfer ({phase}).")


def end_transfer(service, *, cancel: bool, job=None) -> tuple[str, int | None]:
    """Finalize (or cancel) and wait for the end: (final phase, bytes the engine says moved)."""

    def unless_ended(call):
        def ask() -> None:
            try:
                call()
            except sdk.Error as e:
                # The engine refuses (409) to cancel or finalize a transfer that already left its open
                # phases: one cancelled as a cancel request came (by the progress reporter), or ending
                # on its own. That is not busy: asking again would only wait half a minute for the
                # same answer; the wait below sees how it ends.
                if getattr(e, "code", None) != 409 or service.get().phase in OPEN_TRANSFER_PHASES:
                    raise

        return ask

    try:
        # A busy engine answers 409 for a while (a disk being unlocked): asked again, as for any call.
        retry_engine(
            unless_ended(service.cancel if cancel else service.finalize),
            what=f"{'Cancelling' if cancel else 'Finalizing'} the image transfer",
            job=job,
        )
    except sdk.NotFoundError:
        return "gone", None
    except sdk.Error as e:
        if not cancel:
            raise EngineError(f"Finalizing the image transfer failed: {fault_text(e)}") from None
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
        return wait_for(ended, what="the image transfer to end", timeout=600, job=job, cancellable=False)
    except EngineError:
        return "timeout", None


def cancel_open_transfers(connection, disk_ids: set[str], *, job=None) -> None:
    """Cancel the image transfers an interrupted run left open on these disks, and wait until each
    has ended, so the disks are unlocked for what comes next."""
    transfers = connection.system_service().image_transfers_service()
    for t in transfers.list():
        if t.disk is not None and t.disk.id in disk_ids and t.phase in OPEN_TRANSFER_PHASES:
            if job:
                job.log("warning", f"Cancelling image transfer {t.id} left by an earlier run ({t.phase.value})")
            end_transfer(transfers.image_transfer_service(t.id), cancel=True, job=job)


def cancel_transfer(connection, transfer_id: str, *, job=None) -> bool:
    """Cancel one image transfer if it is still open; True when it was."""
    service = connection.system_service().image_transfers_service().image_transfer_service(transfer_id)
    try:
        current = service.get()
    except sdk.NotFoundError:
        return False
    if current.phase not in OPEN_TRANSFER_PHASES:
        return False
    if end_transfer(service, cancel=True, job=job)[0] != "timeout" and job is not None:
        job.forget_engine_object(transfer_id)
    return True
