"""`manage.py files POINT [--disk D] ls|get|put ...`: a backup's files from the command line.

Each run opens the backup on this node (a browsing session), does its one thing and closes it,
whatever happens (Ctrl-C and SIGTERM too). `put` without --wait leaves the session open for its
job, which reads from it; it closes once unused for FILES_IDLE_TIMEOUT.
"""

import io
import os
import shutil
import signal
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import command_user, record_command
from core.formats import iec
from inventory.models import VM
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from recovery.files import browse, sessions
from recovery.files import tree as trees
from recovery.files.errors import FilesError
from recovery.files.putback import CONFLICTS_SHOWN, request_put_back
from recovery.files.tree import printable, shown
from recovery.models import FileSession
from repository.models import BackupPoint


class Command(BaseCommand):
    help = (
        "A backup's files: `ls PATH` lists a folder (`ls /` the disk's filesystems), `get PATH --to DIR` "
        "copies a file or a folder out, `put PATH... --into VM` copies them back into a running VM (a job). "
        'Paths start with a filesystem\'s key: "/p2/etc/nginx" is /etc/nginx of partition 2.'
    )

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, help="backup point id")
        parser.add_argument("--disk", default="", help="disk alias or engine id (default: the first, the boot disk)")
        sub = parser.add_subparsers(dest="verb", required=True)
        ls = sub.add_parser("ls", help="list a folder (a page of it), or at / the disk's filesystems")
        ls.add_argument("path", nargs="?", default="/")
        ls.add_argument("--page", type=int, default=1)
        ls.add_argument("--search", default="", help="only names holding this (any case)")
        get = sub.add_parser("get", help="copy a file, or a folder with what it holds, into a local folder")
        get.add_argument("path")
        get.add_argument("--to", required=True, help="a local folder; a guest folder keeps its path under it")
        get.add_argument("--overwrite", action="store_true", help="replace files that exist there")
        put = sub.add_parser("put", help="copy files or folders back into a running VM over its guest SSH")
        put.add_argument("paths", nargs="+", metavar="PATH")
        put.add_argument("--into", required=True, metavar="VM", help="the VM's name or engine id")
        put.add_argument("--target", default="", help="a folder in the VM (default: each to its original place)")
        put.add_argument("--overwrite", action="store_true", help="overwrite files that exist in the VM")
        put.add_argument("--wait", action="store_true", help="follow the job to its end (then close the session)")

    def handle(self, *args, point, disk, verb, **options):
        found = BackupPoint.objects.select_related("vm", "destination", "policy").filter(pk=point).first()
        if found is None:
            raise CommandError(f"No backup point {point}.")
        if verb == "get" and not Path(options["to"]).is_dir():
            raise CommandError(f"{options['to']} is not a folder here: create it first.")
        previous = _interrupt_on_term()
        session = None
        keep_open = False
        try:
            try:
                who = command_user() or "command line"
                session = sessions.open_session(point=found, who=who, origin=Job.Origin.CLI)
            except FilesError as e:
                raise CommandError(str(e)) from None
            record_command(action="files_session_opened", target=found, session=session.pk, node=session.node)
            try:
                keep_open = getattr(self, f"handle_{verb}")(session, disk or None, **options)
            except FilesError as e:
                raise CommandError(str(e)) from None
        finally:
            closing = session is not None and not keep_open
            if closing and sessions.close_session(session, reason=f"its command (files {verb}) ended"):
                record_command(action="files_session_closed", target=found, session=session.pk)
            _restore_signals(previous)

    # ----- ls ---------------------------------------------------------------------------------

    def handle_ls(self, session: FileSession, disk: str | None, *, path, page, search, **options) -> bool:
        where, found = browse.list_place(session, disk=disk, path=path, page=page, search=search)
        if where.fs is None:
            for fs in found:
                if fs.get("problem"):
                    self.stdout.write(f"{fs['key']}\t{fs.get('type') or '-'}\t{fs['where']} {fs['problem']}")
                else:
                    self.stdout.write(
                        f"{fs['key']}\t{fs['type']}\t{printable(fs.get('label') or '-')}\t{iec(fs.get('bytes'))}\t"
                        f"{iec(fs.get('used'))} used\t{fs['where']}"
                    )
            if not found:
                self.stdout.write(where.disk["problem"] or "No filesystem on this disk.")
            return False
        for entry in found.entries:
            name = printable(entry.name) + ("/" if entry.kind == "dir" else "")
            if entry.kind == "symlink":
                name += f" -> {printable(entry.target)}"
            owner = f"{entry.uid}:{entry.gid}" if entry.uid is not None else "-"
            when = datetime.fromtimestamp(entry.mtime, tz=UTC).strftime("%Y-%m-%d %H:%M")
            size = iec(entry.size) if entry.kind == "file" else "-"
            self.stdout.write(f"{entry.mode_text or '-':10} {owner:>11} {size:>10}  {when}  {name}")
        first = (found.page - 1) * trees.PER_PAGE + 1 if found.total else 0
        last = min(found.page * trees.PER_PAGE, found.total)
        self.stderr.write(f"entries {first:,}-{last:,} of {found.total:,} (page {found.page} of {found.pages})")
        return False

    # ----- get --------------------------------------------------------------------------------

    def handle_get(self, session: FileSession, disk: str | None, *, path, to, overwrite, **options) -> bool:
        into = Path(to)
        download = browse.download(session, disk=disk, path=path)
        record_command(
            action="files_downloaded",
            target=session.point,
            session=session.pk,
            disk=session.disk(disk)["alias"],
            path=shown(path),
            guest_path=shown(download.guest_path),
            to=str(into.resolve()),
        )
        if download.size is not None:
            written = _write_file(into, download.filename, download.chunks, overwrite=overwrite)
            self.stdout.write(str(written))
        else:
            count = _extract(into, download, overwrite=overwrite)
            self.stdout.write(f"{count} files into {into}")
        return False

    # ----- put --------------------------------------------------------------------------------

    def handle_put(
        self, session: FileSession, disk: str | None, *, paths, into, target, overwrite, wait, **options
    ) -> bool:
        vm = _find_vm(session.point, into)
        job = request_put_back(
            session=session,
            vm=vm,
            disk=disk,
            paths=paths,
            target=target,
            overwrite=overwrite,
            origin=Job.Origin.CLI,
        )
        record_command(
            action="files_put_back",
            target=session.point,
            session=session.pk,
            vm=vm.name,
            paths=[shown(p) for p in paths],
            into=target or "their places",
            overwrite=overwrite,
            job=job.pk,
        )
        self.stdout.write(str(job.pk))
        if not wait:
            minutes = settings.FILES_IDLE_TIMEOUT // 60
            self.stderr.write(
                f"Browsing session {session.pk} stays open for job {job.pk}: it closes once unused for {minutes} min "
                f"(or: manage.py jobs, then close it on the Files page)."
            )
            return True
        try:
            job = wait_for_job(job)
        except KeyboardInterrupt:
            job.request_cancel()
            self.stderr.write(f"Interrupted: job {job.pk} is asked to cancel.")
            raise
        finish(job)
        return False


def _find_vm(point: BackupPoint, name: str) -> VM:
    if name in (point.vm.name, str(point.vm.engine_id)):
        return point.vm
    vms = VM.objects.filter(manager=point.vm.manager_id, missing_since=None)
    try:
        found = list(vms.filter(engine_id=uuid.UUID(name)))
    except ValueError:
        found = list(vms.filter(name=name))
    if not found:
        raise CommandError(f"Manager {point.vm.manager} has no VM {name!r} (sync it first if it is new).")
    return found[0]


# ----- writing what was read ------------------------------------------------------------------


def _write_file(into: Path, name: str, chunks: Iterator[bytes], *, overwrite: bool) -> Path:
    """The file as INTO/NAME: written under a temporary name beside it, then renamed over."""
    final = into / name
    if os.path.lexists(final) and not overwrite:
        raise CommandError(f"{final} exists: give --overwrite to replace it.")
    if final.is_dir() and not final.is_symlink():
        raise CommandError(f"{final} is a folder: nothing was written.")
    fd, temporary = tempfile.mkstemp(dir=into, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return final


class _ChunkReader(io.RawIOBase):
    """The download's chunks as a file to read from (tarfile reads a stream of them)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.left = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.left:
            self.left = next(self.chunks, None)
            if self.left is None:
                self.left = b""
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n], self.left = self.left[:n], self.left[n:]
        return n


def _extract(into: Path, download: browse.Download, *, overwrite: bool) -> int:
    """The folder's archive unpacked under INTO, each member at its path inside the guest: first into
    a temporary folder there, then moved into place once nothing is in the way (nothing is replaced
    without --overwrite, and nothing is written through a link)."""
    staging = Path(tempfile.mkdtemp(dir=into, prefix=".files-get-"))
    try:
        unpacked = staging / "tree"
        if download.content_type == "application/zip":
            spooled = staging / "archive.zip"
            with open(spooled, "wb") as out:
                for chunk in download.chunks:
                    out.write(chunk)
            with zipfile.ZipFile(spooled) as archive:
                archive.extractall(unpacked)
        else:
            reader = io.BufferedReader(_ChunkReader(download.chunks), buffer_size=1024 * 1024)
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                # "tar": no absolute names, nothing outside the folder even through a link of the archive.
                archive.extractall(unpacked, filter="tar")
        unpacked.mkdir(exist_ok=True)
        return _move_into(unpacked, into, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(unpacked: Path, into: Path, *, overwrite: bool) -> int:
    folders, files, conflicts = [], [], []
    for root, dirs, names in os.walk(unpacked):
        relative = Path(root).relative_to(unpacked)
        for name in list(dirs):
            if (Path(root) / name).is_symlink():  # a link to a folder: moved as a link, not walked
                dirs.remove(name)
                names.append(name)
            else:
                folders.append(relative / name)
        files += [relative / name for name in names]
    folders.sort()
    files.sort()
    base = into.resolve()
    for folder in folders:
        final = into / folder
        if os.path.lexists(final) and (final.is_symlink() or not final.is_dir()):
            conflicts.append(f"{final} (not a folder)")
    for file in files:
        if os.path.lexists(into / file) and (not overwrite or (into / file).is_dir()):
            conflicts.append(str(into / file))
    if conflicts:
        shown_ = ", ".join(conflicts[:CONFLICTS_SHOWN]) + (" ..." if len(conflicts) > CONFLICTS_SHOWN else "")
        raise CommandError(
            f"{len(conflicts)} of the paths exist in {into} ({shown_}): nothing was written. "
            "Give --overwrite to replace files, or choose another folder."
        )
    for folder in folders:
        (into / folder).mkdir(exist_ok=True)
    for file in files:
        final = into / file
        if final.parent.resolve() != base / file.parent:
            raise CommandError(f"{final.parent} leads elsewhere (a link): {final} was not written.")
        os.replace(unpacked / file, final)
    for folder in reversed(folders):  # their modes and times, once what they hold is in
        shutil.copystat(unpacked / folder, into / folder, follow_symlinks=False)
    return sum(1 for f in files if not (into / f).is_symlink())


# ----- signals ----------------------------------------------------------------------------------


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt_on_term() -> dict:
    """SIGTERM and SIGHUP end the command as Ctrl-C does: through the `finally` that closes the session."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, _interrupt)
    return previous


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
