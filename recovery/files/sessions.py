"""Browsing sessions: a backup point opened on this node for its files, then closed.

A session is a row (FileSession) and a directory of this node (FILES_DIR/ID) holding what opening
made. Opening claims the point's chain for reading (retention keeps it while the session lives)
with the chain daemon's pid as the holder: when the node restarts, the claim dies with it. A
session is closed when asked, when nobody used it for FILES_IDLE_TIMEOUT (the node's worker looks
at every heartbeat) and when the node's worker starts; closing undoes everything under its
directory (recovery.files.disks.close_workdir) and releases the claim.

Pages and the API read the session's mounts directly, so they are served by the node that opened
it: a point on a destination local to another node is browsed on that node's pages.
"""

import logging
import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job
from recovery.files import disks as opening
from recovery.files.errors import FilesError
from recovery.files.tree import FatTree, MountedTree
from recovery.models import FileSession
from repository.claims import PointBusy, chain_of, extend_hold, hold_points, release_hold
from repository.models import BackupPoint
from repository.storage import RepositoryError
from repository.verify import chain_files, chain_formats, manifest_problems

log = logging.getLogger("recovery")

OPENING_CLAIM = timedelta(minutes=2)  # the claim's life while the session opens, before its daemon runs
HOLD_MARGIN = 120  # seconds a claim outlives the idle deadline: the idle sweep runs at the node's heartbeat
PUT_BACK = "files_put_back"  # the job kind of recovery.files.putback, which reads a session's files


def open_session(*, point: BackupPoint, who: str, origin: str, user=None) -> FileSession:
    """Open every disk of the point read-only on this node and find its filesystems.

    Refused, with what to do, for a point that is not complete (a damaged one with verify's
    finding), one on another node's destination, a point being deleted, and when the node has
    FILES_SESSIONS_PER_NODE sessions open already."""
    refuse_unbrowsable(point)
    session = FileSession.objects.create(point=point, node=settings.NODE_NAME, who=who, origin=origin, opened_by=user)
    workdir = Path(settings.FILES_DIR) / str(session.pk)
    session.workdir = str(workdir)
    try:
        # Counted once my row exists: of two sessions opening at once, the later sees the earlier.
        ahead = FileSession.objects.open().here().filter(pk__lt=session.pk).order_by("pk")
        if ahead.count() >= settings.FILES_SESSIONS_PER_NODE:
            listed = ", ".join(f"{s.pk} ({s.who})" for s in ahead)
            raise FilesError(
                f"{settings.FILES_SESSIONS_PER_NODE} browsing sessions are open on node {settings.NODE_NAME}, the "
                f"most FILES_SESSIONS_PER_NODE allows: close one first (open: {listed})."
            )
        token = hold_points(
            chain_of(point),
            doing="browsed",
            holder=f"browsing session {session.pk} ({who})",
            pid=os.getpid(),
            until=timezone.now() + OPENING_CLAIM,
        )
    except (FilesError, PointBusy) as e:
        _fail(session, str(e))
        raise FilesError(str(e)) from None
    session.claim = token
    FileSession.objects.filter(pk=session.pk).update(workdir=session.workdir, claim=token)
    try:
        chains = disk_chains(point)  # read once claimed: no merge or deletion changes them now
        workdir.mkdir(parents=True, mode=0o700)  # the guest's files are not for the node's other users
        pid = opening.start_daemon(workdir, chains)
        extend_hold(token, until=_hold_until(), pid=pid)
        session.disks = [_open_disk(workdir, n, chain) for n, chain in enumerate(chains)]
    except Exception as e:
        opening.close_workdir(workdir)
        release_hold(token)
        message = str(e) if isinstance(e, FilesError) else f"Opening the backup failed: {e}"
        _fail(session, message)
        raise FilesError(message) from None
    opened = FileSession.objects.filter(pk=session.pk, status=FileSession.Status.OPENING)
    if not opened.update(status=FileSession.Status.OPEN, disks=session.disks):
        # Closed while it opened (asked, or the node's worker starting): what was made goes too.
        opening.close_workdir(workdir)
        release_hold(token)
        raise FilesError(f"Browsing session {session.pk} was closed while it opened. Open the backup again.")
    session.status = FileSession.Status.OPEN
    return session


def refuse_unbrowsable(point: BackupPoint) -> None:
    if point.status == BackupPoint.Status.DAMAGED:
        raise FilesError(
            f"Backup {point.pk} is damaged ({point.damage or 'verify found it so'}): its files are not offered. "
            "Restore from another backup."
        )
    if point.status != BackupPoint.Status.COMPLETE:
        raise FilesError(
            f"Backup {point.pk} is {point.get_status_display().lower()}: only a complete backup can be browsed."
        )
    if not point.destination.reachable_here():
        raise FilesError(
            f"Backup {point.pk} is on destination {point.destination.name}, local to node {point.destination.node_id}: "
            f"browse it on that node's pages (this is node {settings.NODE_NAME})."
        )


def disk_chains(point: BackupPoint) -> list[opening.DiskChain]:
    """Each disk's layers, oldest first, in their recorded formats, checked as a restore checks them
    before reading (the manifests link them and the database agrees); refused with verify's words."""
    try:
        manifest = point.manifest()
        for problem in manifest_problems(point, manifest):
            raise RepositoryError(problem)
        chains = []
        for entry in manifest.disks:
            files = [path for path, _ in chain_files(point, entry.disk_id)]
            formats = chain_formats(point, entry.disk_id)
            for path in files:
                if not path.is_file():
                    raise RepositoryError(f"{path} is missing.")
            layers = list(zip(reversed(files), reversed(formats), strict=True))
            chains.append(opening.DiskChain(entry.disk_id, entry.alias, layers, entry.virtual_size))
    except RepositoryError as e:
        raise FilesError(f"Backup {point.pk} is damaged: {e} Its files are not offered.") from None
    return chains


def _open_disk(workdir: Path, n: int, chain: opening.DiskChain) -> dict:
    image = opening.image_of(workdir, n)
    filesystems, problem = opening.find_filesystems(workdir, image, chain.virtual_size)
    for fs in filesystems:
        if not fs.get("problem"):
            fs |= opening.mount(workdir, image, n, fs)
    return {
        "n": n,
        "disk_id": chain.disk_id,
        "alias": chain.alias,
        "size": chain.virtual_size,
        "filesystems": filesystems,
        "problem": f"Disk {chain.alias} {problem}." if problem else "",
    }


def _hold_until():
    """When the session's claim lapses unless used: its idle deadline, and a margin for the sweep
    (the node's heartbeat) that closes it then."""
    return timezone.now() + timedelta(seconds=settings.FILES_IDLE_TIMEOUT + HOLD_MARGIN)


def _fail(session: FileSession, message: str) -> None:
    FileSession.objects.filter(pk=session.pk, status=FileSession.Status.OPENING).update(
        status=FileSession.Status.FAILED, error=message, closed=timezone.now(), close_reason="opening failed"
    )
    session.status, session.error = FileSession.Status.FAILED, message


def usable(session: FileSession) -> FileSession:
    """The session, if it can serve a request here; its idle clock and claim moved on."""
    if not session.is_open:
        said = f": {session.close_reason}" if session.close_reason else ""
        raise FilesError(
            f"Browsing session {session.pk} is {session.get_status_display().lower()}{said}. Open the backup again."
        )
    if session.node != settings.NODE_NAME:
        raise FilesError(
            f"Browsing session {session.pk} is open on node {session.node}: use that node's pages "
            f"(this is {settings.NODE_NAME})."
        )
    now = timezone.now()
    FileSession.objects.filter(pk=session.pk).update(last_used=now)
    session.last_used = now
    if not extend_hold(session.claim, until=_hold_until()):
        # Its claim was found dead (the node silent for longer than its margin): the point may be
        # changing; the session goes rather than read what retention may be deleting.
        close_session(session, reason="it lost its hold on the backup", force=True)
        raise FilesError(f"Browsing session {session.pk} lost its hold on backup {session.point_id}: open it again.")
    return session


def filesystem(session: FileSession, disk_ref: str | None, key: str) -> tuple[dict, dict]:
    disk = session.disk(disk_ref)
    if disk["problem"]:
        raise FilesError(disk["problem"])
    for fs in disk["filesystems"]:
        if fs["key"] == key:
            if fs.get("problem"):
                raise FilesError(f"{fs['where'].capitalize()} of disk {disk['alias']} {fs['problem']}")
            return disk, fs
    keys = ", ".join(fs["key"] for fs in disk["filesystems"]) or "none"
    raise FilesError(f"Disk {disk['alias']} has no filesystem {key} (it has: {keys}).")


def tree_of(session: FileSession, disk: dict, fs: dict):
    """The filesystem as a tree to read; close it when done (a FAT tree holds the disk open)."""
    if fs.get("fat"):
        return FatTree(opening.image_of(Path(session.workdir), disk["n"]), offset=fs["offset"], size=fs["size"])
    return MountedTree(Path(fs["mount"]))


def close_session(session: FileSession, *, reason: str, idle_before=None, force: bool = False) -> bool:
    """Close it (this node's processes must do it); False when it was closed already, or used again
    since `idle_before` (the idle sweep's cutoff). A session a put-back job copies from is closed only
    with `force` (the node starting: its jobs are dead)."""
    if session.is_open and session.node != settings.NODE_NAME:
        # Its mounts and processes are that node's: closing the record here would leave them there.
        raise FilesError(
            f"Browsing session {session.pk} is open on node {session.node}: close it on that node's pages "
            f"(this is {settings.NODE_NAME})."
        )
    if not force and (job := putting_back(session)) is not None:
        raise FilesError(
            f"Browsing session {session.pk} is being read by job {job} (files put back): wait for it to end, "
            "or cancel it first."
        )
    still = FileSession.objects.filter(pk=session.pk).filter(
        Q(status=FileSession.Status.OPEN) | Q(status=FileSession.Status.OPENING)
    )
    if idle_before is not None:
        still = still.filter(last_used__lt=idle_before)
    if not still.update(status=FileSession.Status.CLOSED, closed=timezone.now(), close_reason=reason):
        return False
    try:
        if session.workdir:
            opening.close_workdir(Path(session.workdir))
    except FilesError as e:
        log.error("closing browsing session %s: %s", session.pk, e)
        FileSession.objects.filter(pk=session.pk).update(error=str(e))
    finally:
        release_hold(session.claim)
    session.status = FileSession.Status.CLOSED
    return True


def putting_back(session: FileSession) -> int | None:
    """The id of a queued or running put-back job reading the session, if any."""
    jobs = Job.objects.filter(
        kind=PUT_BACK, params__session=session.pk, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
    )
    return jobs.values_list("pk", flat=True).first()


def close_idle_sessions_here() -> int:
    """Close this node's sessions nobody used for FILES_IDLE_TIMEOUT (the worker's heartbeat calls it)."""
    minutes = settings.FILES_IDLE_TIMEOUT // 60
    idle = f"nobody used it for {minutes} min" if minutes else f"nobody used it for {settings.FILES_IDLE_TIMEOUT} s"
    cutoff = timezone.now() - timedelta(seconds=settings.FILES_IDLE_TIMEOUT)
    closed = 0
    for session in FileSession.objects.idle(cutoff).here():
        if putting_back(session) is None:  # the job keeps it used while it copies
            closed += close_session(session, reason=idle, idle_before=cutoff)
    return closed


def close_sessions_here(reason: str = "its node restarted") -> int:
    """Close every session of this node, and remove whatever a killed process left in FILES_DIR
    without a record (the worker calls it when it starts)."""
    closed = sum(close_session(s, reason=reason, force=True) for s in FileSession.objects.open().here())
    root = Path(settings.FILES_DIR)
    if root.is_dir():
        for workdir in root.iterdir():
            if workdir.is_symlink() or not workdir.is_dir():
                continue  # not a session's: nothing of ours is a link
            if not FileSession.objects.open().here().filter(workdir=str(workdir)).exists():
                opening.close_workdir(workdir)
    return closed
