"""What pages, the API and the command line ask of an open session, in one place.

A path names a filesystem of the disk first, by its key, then a place in it: "/p2/etc/nginx" is
/etc/nginx of partition 2, "/vg_db01-root/var" /var of that LV, "/disk/..." a filesystem on the
whole disk; "/" lists the disk's filesystems.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

from recovery.files import tree as trees
from recovery.files.errors import FilesError, NotFound
from recovery.files.sessions import filesystem, tree_of, usable
from recovery.models import FileSession

TOUCH_EVERY = 30  # seconds between a long download's marks of its session as used
# Folders of these filesystems are downloaded as zip (what Windows opens), the others as tar.
ZIP_FILESYSTEMS = {"ntfs", "vfat"}


@dataclass(frozen=True)
class Place:
    disk: dict
    fs: dict | None  # None: the disk's root, which lists its filesystems
    parts: list[str]  # inside the filesystem

    @property
    def path(self) -> str:
        return "/" + "/".join(([self.fs["key"]] if self.fs else []) + self.parts)


def place(session: FileSession, *, disk: str | None, path: str) -> Place:
    usable(session)
    parts = trees.split_path(path or "/")
    chosen = session.disk(disk)
    if not parts:
        if chosen["problem"]:
            raise FilesError(chosen["problem"])
        return Place(chosen, None, [])
    found, fs = filesystem(session, chosen["disk_id"], parts[0])
    return Place(found, fs, parts[1:])


def list_place(
    session: FileSession, *, disk: str | None, path: str, page: int = 1, per_page: int = 0, search: str = ""
):
    """A folder's page of entries (trees.Listing); for "/", the disk's filesystems (a list of dicts)."""
    where = place(session, disk=disk, path=path)
    if where.fs is None:
        return where, where.disk["filesystems"]
    tree = tree_of(session, where.disk, where.fs)
    try:
        listing = _in(where, trees.list_folder)(
            tree,
            where.parts,
            cache_key=(session.pk, where.disk["n"], where.fs["key"]),
            page=page,
            per_page=per_page or trees.PER_PAGE,
            search=search,
        )
    finally:
        tree.close()
    return where, listing


@dataclass(frozen=True)
class Download:
    filename: str
    content_type: str
    size: int | None  # None for an archive (streamed, its size unknown ahead)
    chunks: Iterator[bytes]
    guest_path: str  # for the audit log


def download(session: FileSession, *, disk: str | None, path: str) -> Download:
    """A file as it is, a folder as an archive (zip for NTFS and FAT, tar otherwise) whose members
    keep their paths inside the guest; streamed, never copied first."""
    where = place(session, disk=disk, path=path)
    if where.fs is None:
        raise FilesError("Choose a filesystem of the disk first: / lists them.")
    tree = tree_of(session, where.disk, where.fs)
    try:
        found = _in(where, _download)(tree, where)
    except BaseException:
        tree.close()
        raise
    chunks = _Stream(found.chunks, tree, session)
    return Download(found.filename, found.content_type, found.size, chunks, found.guest_path)


def _in(where: Place, fn):
    """`fn`, its "does not exist" saying on which filesystem and disk (the tree names paths inside it)."""

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotFound as e:
            fs, disk = where.fs, where.disk["alias"]
            raise NotFound(f"{str(e).rstrip('.')} on {fs['where']} (/{fs['key']}) of disk {disk}.") from None

    return call


class _Stream:
    """A download's chunks: its session kept in use while they flow (a download longer than the idle
    timeout is not cut), its tree closed at the end, or when the response is closed unstarted."""

    def __init__(self, chunks: Iterator[bytes], tree, session: FileSession):
        self.chunks, self.tree, self.session = chunks, tree, session
        self.touched = time.monotonic()

    def __iter__(self) -> "_Stream":
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self.chunks)
        except BaseException:
            self.close()
            raise
        if time.monotonic() - self.touched > TOUCH_EVERY:
            usable(self.session)
            self.touched = time.monotonic()
        return chunk

    def close(self) -> None:
        getattr(self.chunks, "close", lambda: None)()
        self.tree.close()


def _download(tree, where: Place) -> Download:
    entry = tree.stat(where.parts)
    guest = "/" + "/".join(where.parts)
    if entry.kind == "dir":
        base = where.parts[-1] if where.parts else where.fs.get("label") or where.fs["key"]
        if where.fs["type"] in ZIP_FILESYSTEMS:
            chunks = trees.stream_zip(tree, where.parts, prefix=[])
            return Download(f"{base}.zip", "application/zip", None, chunks, guest)
        return Download(f"{base}.tar", "application/x-tar", None, trees.stream_tar(tree, where.parts, prefix=[]), guest)
    found, chunks = trees.stream_file(tree, where.parts)
    return Download(found.name, "application/octet-stream", found.size, chunks, guest)
