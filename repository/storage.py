"""The repository format on a filesystem destination (see DESIGN.md).

    DEST/VM_UUID/BACKUP_ID/vm.ovf
    DEST/VM_UUID/BACKUP_ID/DISK_UUID.qcow2    full: standalone; incremental: backing file ../PARENT/DISK.qcow2
    DEST/VM_UUID/BACKUP_ID/manifest.json      written last, atomically

Files are written under a temporary name and renamed when complete; the manifest is written
last and fsynced, after the files it names, so a directory without a manifest is an unfinished
backup and is ignored.

The manifest itself is read and written by repository.manifest.
"""

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import blake3

from core.errors import OperatorError


class RepositoryError(OperatorError):
    """A backup on a destination cannot be read or written as it should; the message says why."""


class DestinationRefused(OperatorError):
    """A destination's directory is not (any more) where it was checked to be: nothing is read or
    written there. Not a RepositoryError: the backups in it are not damaged, just out of reach."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Wait until the file's data is on the disk (written by another process, or closed already)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2
PAGE_MASK = os.sysconf("SC_PAGE_SIZE") - 1


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range of a file being copied to the disk, without waiting: the
    fsync before the manifest then waits for the last range only, not for the whole file (0.5 s per
    GiB here). Advice only; the fsync is what guarantees it."""
    if length <= 0:
        return  # 0 would mean "to the end of the file"
    _libc.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace a file whole: a temporary file, fsynced, renamed over it. A rename of a file onto
    another is atomic on every filesystem a destination may be (NFS, SMB, sshfs with OpenSSH's
    posix-rename), unlike renameat2's exchange, so this is the one switch the repository relies on.
    A failed write (a full destination) leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def open_stored(path: Path):
    """A point's stored file, open for reading; never through a symbolic link, never anything but a
    regular file. The service writes a point's files itself and never as links: a link in a point's
    directory is not what was written, and following it would read whatever it names, anywhere.
    FileNotFoundError when it is missing; RepositoryError, in words, for the rest."""
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the reader (no effect on a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise RepositoryError(
            f"{path} is a symbolic link (to {os.readlink(path)}), not a file the backup wrote; it is not followed."
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RepositoryError(f"{path} is not a regular file, so not a file the backup wrote.")
    return os.fdopen(fd, "rb")


def checksum_file(f, algorithm: str = "blake3") -> str:
    """ "ALGORITHM:HEX" of an open binary file's bytes; it closes the file, which may be renamed meanwhile.

    BLAKE3 hashes each large read with a thread per core, so the pass that follows a download costs
    about half of a sha256 one; sha256 stays readable for points written before. The holes of a
    sparse file are hashed as zeros without reading them (an 8 GiB RAW file holding 1 MiB: 0.8 s,
    against 3.4 s read and 10.8 s memory-mapped here). Never memory-mapped: a mapped page that cannot
    be read kills the whole process with SIGBUS (a hole of a sparse file on a full tmpfs, a file
    truncated meanwhile), where a read raises an error in words."""
    with f:
        if algorithm == "blake3":
            digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
            _hash_data_and_holes(f.fileno(), digest)
        elif algorithm == "sha256":
            digest = hashlib.sha256()
            while chunk := f.read(4 * 1024 * 1024):
                digest.update(chunk)
        else:
            raise RepositoryError(f"Unknown checksum algorithm {algorithm!r}.")
    return f"{algorithm}:{digest.hexdigest()}"


HASH_CHUNK = 16 * 1024 * 1024
_ZEROS = memoryview(bytes(HASH_CHUNK))


def _hash_data_and_holes(fd: int, digest) -> None:
    """Feed the file's bytes to `digest` in order: its data read, its holes (SEEK_HOLE) as zeros."""
    size = os.fstat(fd).st_size
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    at = 0
    while at < size:
        try:
            data = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # past the last data: a hole to the end
                raise
            data = size
        while at < min(data, size):
            n = min(HASH_CHUNK, data - at)
            digest.update(_ZEROS[:n])
            at += n
        if at >= size:
            break
        hole = os.lseek(fd, at, os.SEEK_HOLE)
        while at < hole:
            n = os.preadv(fd, [view[: min(HASH_CHUNK, hole - at)]], at)
            if n == 0:
                raise RepositoryError(f"The file ended at {at} bytes while being read, before its size of {size}.")
            digest.update(view[:n])
            at += n


class GrowingFileChecksum:
    """BLAKE3 of a file another process is writing from its start (a copy's stdout), read behind the
    writer in a thread: the checksum is ready when the copy ends instead of costing a pass after it,
    and what was read is already on its way to the disk.
    Only for a file written once, in order: Linux moves a regular file's size past a page only once
    that page holds its data, so what a read returns is final."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the thread)
        self._digest = blake3.blake3()
        self._written = threading.Event()
        self._abandoned = False
        self._hashed = 0
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._follow, daemon=True, name="growing-file-checksum")
        self._thread.start()

    def _follow(self) -> None:
        buffer = bytearray(4 * 1024 * 1024)
        with self._file as f:
            while not self._abandoned:
                written = self._written.is_set()  # read before the last read: after it the size is final
                try:
                    n = f.readinto(buffer)
                except OSError as e:
                    self._error = e
                    return
                if n:
                    self._digest.update(memoryview(buffer)[:n])
                    # Whole pages only: the last one may still be filling.
                    start = self._hashed & ~PAGE_MASK
                    self._hashed += n
                    start_writeback(f.fileno(), start, (self._hashed & ~PAGE_MASK) - start)
                elif written:
                    return
                else:
                    self._written.wait(0.05)

    def finish(self) -> str:
        """Once the writer is done (its process ended): "blake3:HEX" of the whole file."""
        self._written.set()
        self._thread.join()
        if self._error is not None:
            raise RepositoryError(f"Reading {self._file.name} back to checksum it failed: {self._error}")
        size = os.stat(self._file.name).st_size
        if self._hashed != size:
            # A filesystem that showed the file's end before its data (a FUSE or network one).
            raise RepositoryError(
                f"The checksum of {self._file.name} covers {self._hashed} of its {size} bytes; the copy is "
                "not trusted. Nothing was stored."
            )
        return f"blake3:{self._digest.hexdigest()}"

    def abandon(self) -> None:
        """The copy failed: stop reading at once."""
        self._abandoned = True
        self._written.set()
        self._thread.join()


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def destination_full(directory: Path, cause: str) -> RepositoryError | None:
    """The error, in words, for a copy into `directory` that failed because its filesystem filled
    up; None when there is room left. Asked after any failure of a copy: what failed rarely says why
    (ssh writing our file exits 255, a helper process says "write error")."""
    if free_bytes(directory) >= 1024 * 1024:
        return None
    return RepositoryError(
        f"The destination filled up: no space was left in {directory} ({cause}). This backup's files "
        "are removed and older backups are untouched; free space there or choose another destination."
    )


@dataclass
class PointDir:
    """One backup point's directory on a destination."""

    root: Path  # the destination's path
    vm_id: str
    point_id: str

    @property
    def path(self) -> Path:
        return self.root / self.vm_id / self.point_id

    def relative(self, name: str) -> str:
        return f"{self.vm_id}/{self.point_id}/{name}"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=False)
        except FileNotFoundError:
            # The VM's directory went with its last point just as it was made (see remove): once more.
            self.path.mkdir(parents=True, exist_ok=False)

    def part(self, name: str) -> Path:
        """Where a file is written until it is complete."""
        return self.path / f".{name}.part"

    def commit(self, name: str) -> Path:
        final = self.path / name
        os.replace(self.part(name), final)
        return final

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        # The VM's directory goes with its last point: a failed first backup leaves nothing behind.
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
