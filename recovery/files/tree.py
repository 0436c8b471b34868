"""A guest filesystem seen read-only: listing (paged, searched), files opened, folders streamed as
tar or zip. Two kinds of tree: a mounted one (MountedTree, walked by file descriptors) and the FAT
reader's (recovery.files.fat); both give the same Entry.

A guest filesystem is hostile input. Paths are walked one component at a time from the
filesystem's root, each opened with O_NOFOLLOW: a symbolic link is listed as what it is (with its
target) and never followed, so nothing outside the guest's filesystem is ever read, and `..` and
`.` are refused before anything is opened.
"""

import os
import stat
import tarfile
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from recovery.files.errors import FilesError, NotFound

# A file is read in pieces of FUSE's readahead window (128 KiB, what fuse2fs and ntfs-3g ask for, and
# what cp reads with): the kernel then reads the next window ahead while this one is sent. A larger
# read is served window by window while the reader waits: 1 MiB reads took a 1 GiB file out of
# fuse2fs at 0.75x cp's speed, 128 KiB ones at cp's.
CHUNK = 128 * 1024
PER_PAGE = 200
MAX_PER_PAGE = 1000


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "symlink" or "other" (a device, a socket, a FIFO)
    size: int
    mtime: float
    mode: int | None = None  # permission bits
    uid: int | None = None
    gid: int | None = None
    target: str = ""  # a symbolic link's, as the guest wrote it
    inode: int | None = None  # a folder reached twice (hard-linked, a damaged filesystem) is walked once

    @property
    def mode_text(self) -> str:
        """As `ls -l` shows it ("drwxr-xr-x"); "" where the filesystem keeps no permissions (FAT)."""
        if self.mode is None:
            return ""
        kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
        return stat.filemode(kinds.get(self.kind, 0) | self.mode)


@dataclass(frozen=True)
class Listing:
    path: str
    entries: list[Entry]
    total: int  # entries of the directory (that match the search)
    page: int
    pages: int


class Tree(Protocol):
    def names(self, parts: list[str]) -> list[str]: ...
    def stat(self, parts: list[str]) -> Entry: ...
    def open(self, parts: list[str]) -> BinaryIO: ...


def shown(text: str) -> str:
    """A guest's name as text whatever its bytes (those that are not UTF-8 as U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def printable(text: str) -> str:
    """A guest's name safe for a terminal: control characters (escape sequences, a newline that would
    forge another line) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown(text))


def split_path(path: str) -> list[str]:
    """The components of a path inside the guest filesystem; `..`, `.` and NUL refused."""
    if "\0" in path:
        raise FilesError("A path cannot hold a NUL character.")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise FilesError(f"{path} holds '{part}': give the path from the filesystem's root, without . or ..")
    return parts


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class MountedTree:
    """A filesystem mounted read-only at `root` (fuse2fs, ntfs-3g, a read-only kernel mount)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir_fd(self, parts: list[str]) -> int:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for n, part in enumerate(parts):
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    raise NotFound(f"/{'/'.join(parts[: n + 1])} does not exist.") from None
                except (NotADirectoryError, OSError) as e:
                    where = "/" + "/".join(parts[: n + 1])
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        target = os.readlink(part, dir_fd=fd)
                        raise FilesError(f"{where} is a symbolic link to {target}; links are not followed.") from None
                    if isinstance(e, NotADirectoryError):
                        raise FilesError(f"{where} is not a folder.") from None
                    raise FilesError(f"{where} cannot be read: {e.strerror or e}.") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def names(self, parts: list[str]) -> list[str]:
        fd = self._dir_fd(parts)
        try:
            return os.listdir(fd)
        except OSError as e:  # a damaged filesystem: EUCLEAN, EIO
            raise FilesError(f"/{'/'.join(parts)} cannot be read: {e.strerror or e}.") from None
        finally:
            os.close(fd)

    def stat(self, parts: list[str]) -> Entry:
        if not parts:
            return self._entry_at(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY), ".", "/")
        return self._entry_at(self._dir_fd(parts[:-1]), parts[-1], "/" + "/".join(parts))

    def _entry_at(self, fd: int, name: str, where: str) -> Entry:
        try:
            return self._entry(fd, name)
        except FileNotFoundError:
            raise NotFound(f"{where} does not exist.") from None
        except OSError as e:
            raise FilesError(f"{where} cannot be read: {e.strerror or e}.") from None
        finally:
            os.close(fd)

    def _entry(self, fd: int, name: str) -> Entry:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        kind = _kind(st.st_mode)
        target = os.readlink(name, dir_fd=fd) if kind == "symlink" else ""
        return Entry(
            name=name,
            kind=kind,
            size=st.st_size if kind == "file" else 0,
            mtime=st.st_mtime,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            target=target,
            inode=st.st_ino,
        )

    def entries(self, parts: list[str], names: list[str]) -> list[Entry]:
        """The entries `names` of the folder `parts`, in that order (one folder opened for them all)."""
        fd = self._dir_fd(parts)
        try:
            found = []
            for name in names:
                try:
                    found.append(self._entry(fd, name))
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise FilesError(f"/{'/'.join([*parts, name])} cannot be read: {e.strerror or e}.") from None
            return found
        finally:
            os.close(fd)

    def open(self, parts: list[str]) -> BinaryIO:
        if not parts:
            raise FilesError("/ is a folder: download it as an archive.")
        fd = self._dir_fd(parts[:-1])
        where = "/" + "/".join(parts)
        try:
            try:
                file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except FileNotFoundError:
                raise NotFound(f"{where} does not exist.") from None
            except OSError as e:
                entry = self._entry(fd, parts[-1])
                if entry.kind == "symlink":
                    raise FilesError(f"{where} is a symbolic link to {entry.target}; links are not followed.") from None
                raise FilesError(f"{where} cannot be read: {e.strerror or e}.") from None
        finally:
            os.close(fd)
        mode = os.fstat(file_fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(file_fd)
            what = "a folder: download it as an archive" if stat.S_ISDIR(mode) else "not a regular file"
            raise FilesError(f"{where} is {what}.")
        os.set_blocking(file_fd, True)
        return os.fdopen(file_fd, "rb", buffering=0)

    def close(self) -> None:
        pass


class FatTree:
    """A FAT filesystem read by our own reader (recovery.files.fat), as a tree of the same Entry."""

    def __init__(self, image: Path, *, offset: int, size: int):
        from recovery.files.fat import FatVolume

        self.volume = FatVolume(image, offset=offset, size=size)

    def _path(self, parts: list[str]) -> str:
        return "/" + "/".join(parts)

    def _call(self, fn, parts: list[str]):
        from recovery.files.fat import FatError

        where = self._path(parts)
        try:
            return fn(where)
        except FileNotFoundError:
            raise NotFound(f"{where} does not exist.") from None
        except NotADirectoryError:
            raise FilesError(f"{where} is not a folder.") from None
        except IsADirectoryError:
            raise FilesError(f"{where} is a folder: download it as an archive.") from None
        except FatError as e:
            raise FilesError(f"{where} cannot be read: {e}") from None

    def names(self, parts: list[str]) -> list[str]:
        return [e.name for e in self._call(self.volume.entries, parts)]

    def stat(self, parts: list[str]) -> Entry:
        found = self._call(self.volume.stat, parts)
        return Entry(found.name or "/", found.kind, found.size, found.mtime, found.mode)

    def open(self, parts: list[str]) -> BinaryIO:
        return self._call(self.volume.open, parts)

    def close(self) -> None:
        self.volume.close()


# ----- listing -------------------------------------------------------------------------------

# Sorted names of the folders listed lately (per process): the pages of a folder of 100,000
# entries read it once. The filesystems are read-only, so a folder's names never change.
_NAMES: "OrderedDict[tuple, list[str]]" = OrderedDict()
_NAMES_KEPT = 16


def sorted_names(tree, key: tuple, parts: list[str]) -> list[str]:
    cached = _NAMES.get(key)
    if cached is None:
        cached = sorted(tree.names(parts), key=lambda n: (n.casefold(), n))
        _NAMES[key] = cached
        while len(_NAMES) > _NAMES_KEPT:
            _NAMES.popitem(last=False)
    else:
        _NAMES.move_to_end(key)
    return cached


def list_folder(
    tree, parts: list[str], *, cache_key: tuple, page: int = 1, per_page: int = PER_PAGE, search: str = ""
) -> Listing:
    """One page of a folder's entries, by name; with `search`, only the names holding it (any case)."""
    if per_page < 1 or per_page > MAX_PER_PAGE:
        raise FilesError(f"A page holds 1 to {MAX_PER_PAGE} entries, not {per_page}.")
    names = sorted_names(tree, cache_key + tuple(parts), parts)
    if search:
        wanted = search.casefold()
        names = [n for n in names if wanted in n.casefold()]
    pages = max(1, -(-len(names) // per_page))
    if page < 1 or page > pages:
        raise FilesError(f"There is no page {page}: the folder's listing has {pages}.")
    chosen = names[(page - 1) * per_page : page * per_page]
    # A mounted folder is opened once for the whole page; the FAT reader looks each name up.
    entries = tree.entries(parts, chosen) if isinstance(tree, MountedTree) else [tree.stat(parts + [n]) for n in chosen]
    return Listing("/" + "/".join(parts), entries, len(names), page, pages)


# ----- archives --------------------------------------------------------------------------------


MAX_DEPTH = 256  # a damaged filesystem's folder that holds one of its parents would never end


def walk(tree, parts: list[str], *, depth: int = 0, seen: set | None = None) -> Iterator[tuple[list[str], Entry]]:
    """Every entry under the folder `parts` (itself first), depth first; links are not followed, and a
    folder reached again (hard-linked folders of a damaged or hostile filesystem) is not entered again."""
    if depth > MAX_DEPTH:
        raise FilesError(f"/{'/'.join(parts)} lies {MAX_DEPTH} folders deep: the filesystem looks damaged.")
    seen = set() if seen is None else seen
    top = tree.stat(parts)
    yield parts, top
    if top.kind != "dir" or top.inode in seen:
        return
    if top.inode is not None:
        seen.add(top.inode)
    for name in sorted(tree.names(parts)):
        yield from walk(tree, parts + [name], depth=depth + 1, seen=seen)


def _read_chunks(tree, parts: list[str], size: int) -> Iterator[bytes]:
    """At most `size` bytes of the file (what its header announced), zeros after a short read."""
    left = size
    with tree.open(parts) as f:
        while left > 0:
            try:
                data = f.read(min(CHUNK, left))
            except OSError as e:
                raise FilesError(f"/{'/'.join(parts)} cannot be read: {e.strerror or e}.") from None
            if not data:
                break
            left -= len(data)
            yield data
    while left > 0:  # the file shrank: cannot be, read-only; keep the archive's framing anyway
        n = min(CHUNK, left)
        left -= n
        yield bytes(n)


def stream_file(tree, parts: list[str]) -> tuple[Entry, Iterator[bytes]]:
    entry = tree.stat(parts)
    if entry.kind == "symlink":
        raise FilesError(f"/{'/'.join(parts)} is a symbolic link to {entry.target}; links are not followed.")
    if entry.kind != "file":
        raise FilesError(f"/{'/'.join(parts)} is not a file.")
    tree.open(parts).close()  # refused now, not once the response has started
    return entry, _read_chunks(tree, parts, entry.size)


def stream_tar(
    tree, parts: list[str], *, prefix: list[str], strip: int = 0, end: bool = True, on_data=None
) -> Iterator[bytes]:
    """The folder (or file) as a POSIX (pax) tar, each member named by its path inside the guest's
    filesystem after `prefix`, less its first `strip` components; streamed: nothing is copied first.
    `on_data(n)` is told of each file's bytes as they go; `end` closes the archive."""
    for member_parts, entry in walk(tree, parts):
        info = tarfile.TarInfo("/".join(prefix + member_parts[strip:]) or ".")
        info.mtime = int(entry.mtime)
        info.mode = entry.mode if entry.mode is not None else (0o755 if entry.kind == "dir" else 0o644)
        info.uid, info.gid = entry.uid or 0, entry.gid or 0
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, entry.target
        elif entry.kind == "file":
            info.size = entry.size
        else:
            continue  # devices, sockets, FIFOs: nothing to give back
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if entry.kind == "file":
            for chunk in _read_chunks(tree, member_parts, entry.size):
                yield chunk
                if on_data is not None:
                    on_data(len(chunk))
            if entry.size % tarfile.BLOCKSIZE:
                yield bytes(tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE)
    if end:
        yield bytes(tarfile.RECORDSIZE)  # two zero blocks end the archive; a whole record pads it


class _Sink:
    """Where zipfile writes: kept until the stream takes it (zipfile needs only write and tell)."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def stream_zip(tree, parts: list[str], *, prefix: list[str]) -> Iterator[bytes]:
    """The folder as a zip (what Windows users open; NTFS and FAT folders), streamed. Links are left
    out: zip has no portable way to hold them."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for member_parts, entry in walk(tree, parts):
            if entry.kind not in ("file", "dir"):
                continue
            name = "/".join(prefix + member_parts)
            if not name:
                continue
            stamp = time.gmtime(max(entry.mtime, 315532800))[:6]  # zip's clock starts in 1980
            info = zipfile.ZipInfo(name + "/" if entry.kind == "dir" else name, date_time=stamp)
            mode = entry.mode if entry.mode is not None else 0o644
            info.external_attr = ((stat.S_IFDIR if entry.kind == "dir" else stat.S_IFREG) | mode) << 16
            if entry.kind == "dir":
                info.external_attr |= 0x10
                archive.writestr(info, b"")
            else:
                info.file_size = entry.size
                with archive.open(info, "w", force_zip64=entry.size > 2**31) as out:
                    for chunk in _read_chunks(tree, member_parts, entry.size):
                        out.write(chunk)
                        yield sink.take()
            yield sink.take()
    yield sink.take()
