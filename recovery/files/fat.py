"""A read-only FAT12/16/32 reader in user space for file-level restore (issue #25): this kernel has no
vfat driver and Debian's fusefat misreads dates, labels and 8.3 names. It parses a region of a file (a
partition of an exposed disk) and never writes a byte. Layout: Microsoft's "FAT: General Overview of
On-Disk Format"; where that leaves a choice, Linux's vfat is followed."""

import array
import bisect
import codecs
import errno
import io
import os
import struct
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, Self

from core.errors import OperatorError

_PAGE = 1 << 20  # the FAT is read and cached a MiB at a time: a big FAT32's FAT need not sit in memory
_KEPT = 64  # FAT pages and parsed directories kept (a folder download opens each file of one in turn)
_CHUNK = 16 << 20  # the most one pread asks for
_MAX_DIR = 65536 * 32  # FAT's own limit: a directory holds at most 65,536 entries of 32 bytes
_SLOT = struct.Struct("<11sBBBHHHHHHHI")  # name, attr, NT case, checksum/tenths, 3 x date, hi, time, date, lo, size
_OEM = "cp437"  # the code page of 8.3 names, Linux's default too; long names are UTF-16
_ROTATED = bytes(((n & 1) << 7) | (n >> 1) for n in range(256))
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))  # the top 4 bits of a FAT32 entry are reserved


class FatError(OperatorError):
    """Not FAT, or a damaged FAT: the message says which image and what is wrong."""


@dataclass(frozen=True)
class Entry:
    """One name in a directory, with the fields of the product's other filesystems' entries."""

    name: str
    kind: Literal["file", "dir"]
    size: int
    mtime: float
    mode: int
    uid: int | None = None  # FAT has no owners
    gid: int | None = None
    target: str = ""  # nor symbolic links


class _Dir(NamedTuple):
    entries: list[Entry]
    names: dict[str, tuple[Entry, int]]  # casefolded name -> (entry, first cluster)
    label: str


_ROOT = Entry(name="", kind="dir", size=0, mtime=0.0, mode=0o755)


def _mtime(date: int, time: int) -> float:
    # FAT stores local time without a zone: it is taken as UTC (shown as the guest's clock read).
    day, hours, minutes, seconds = _day(date), time >> 11, (time >> 5) & 63, (time & 31) * 2
    if day is None or hours > 23 or minutes > 59 or seconds > 59:
        return 0.0  # no date, or a damaged one: not worth refusing the whole listing for
    return day + hours * 3600 + minutes * 60 + seconds


@lru_cache(maxsize=4096)
def _day(date: int) -> float | None:
    try:
        return datetime(1980 + (date >> 9), (date >> 5) & 15, date & 31, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _oem(name: bytes) -> str:
    return name.decode("ascii") if name.isascii() else name.decode(_OEM)


def _checksum(short_name: bytes) -> int:
    """The 8.3 name's checksum that its long-name slots carry: rotate right by one bit, add the byte."""
    total = 0
    for byte in short_name:
        total = (_ROTATED[total] + byte) & 0xFF
    return total


class FatVolume:
    """The FAT filesystem at `offset` of `path`, `size` bytes long (the rest of the file by default)."""

    def __init__(self, path: str | Path, *, offset: int = 0, size: int | None = None) -> None:
        self._where = f"{path} at byte {offset}" if offset else str(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._parse_boot_sector(offset, size)
            self._pages: dict[int, bytes | array.array] = {}
            self._dirs: dict[int | None, _Dir] = {}
            # Windows and blkid show the root's volume-label entry first; "NO NAME" is mkfs's "none".
            label = self._dir(self._root, "/").label or self._boot_label
            self.label = "" if label == "NO NAME" else label
        except BaseException:
            os.close(self._fd)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _parse_boot_sector(self, offset: int, size: int | None) -> None:
        end = os.lseek(self._fd, 0, os.SEEK_END)  # files and block devices alike
        size = end - offset if size is None else size
        if offset < 0 or size < 0 or offset + size > end:
            raise FatError(f"{self._where}: {size} bytes at byte {offset} are past the image's end ({end} bytes)")
        self._base = offset
        if size < 512:
            raise FatError(f"{self._where}: not a FAT filesystem (only {size} bytes)")
        boot = self._read(0, 512)
        bps, spc, reserved, nfats, root_entries, total16 = struct.unpack_from("<HBHBHH", boot, 11)
        (fat16,) = struct.unpack_from("<H", boot, 22)
        total32, fat32, flags, _, root_cluster = struct.unpack_from("<IIHHI", boot, 32)
        if (
            boot[510:512] != b"\x55\xaa"
            or boot[0] not in (0xEB, 0xE9)
            or boot[3:11] in (b"NTFS    ", b"EXFAT   ")
            or bps not in (512, 1024, 2048, 4096)
            or spc not in (1, 2, 4, 8, 16, 32, 64, 128)
        ):
            raise FatError(f"{self._where}: not a FAT filesystem (no FAT boot sector)")
        total, fat_sectors = total16 or total32, fat16 or fat32
        data = reserved + nfats * fat_sectors + (root_entries * 32 + bps - 1) // bps
        clusters = (total - data) // spc if total > data else 0
        # As Linux decides: FAT32 when the 16-bit FAT size is 0, else FAT12 or FAT16 by the cluster count.
        self._bits = 32 if fat16 == 0 else 12 if clusters < 4085 else 16
        self.fat_type = f"FAT{self._bits}"
        active = flags & 0x0F if self._bits == 32 and flags & 0x80 else 0  # FAT32 may mirror no FAT
        if (
            not (reserved and nfats and fat_sectors and clusters)
            or clusters > {12: 4084, 16: 65524, 32: 0x0FFFFFF5}[self._bits]
            or (clusters + 2) * self._bits > fat_sectors * bps * 8
            or (self._bits == 32) == bool(root_entries)
            or (self._bits == 32 and not 2 <= root_cluster < clusters + 2)
            or active >= nfats
            or bps * spc > 65536
        ):
            raise FatError(
                f"{self._where}: bad FAT geometry ({bps} bytes a sector, {spc} sectors a cluster, {reserved} "
                f"reserved, {nfats} FATs of {fat_sectors} sectors, {root_entries} root entries, {total} sectors)"
            )
        if total * bps > size:
            raise FatError(f"{self._where}: truncated: the filesystem is {total * bps} bytes, only {size} are here")
        self._clusters, self._cluster_size = clusters, bps * spc
        self._eoc = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[self._bits]
        self._fat_pos = (reserved + active * fat_sectors) * bps
        self._fat_len = ((clusters + 2) * self._bits + 7) // 8
        self._root_pos, self._root_len = (reserved + nfats * fat_sectors) * bps, root_entries * 32
        self._data_pos = data * bps
        self._root = root_cluster if self._bits == 32 else None  # FAT12/16 have a fixed root region
        sig = 0x42 if self._bits == 32 else 0x26
        self._boot_label = boot[sig + 5 : sig + 16].decode(_OEM).rstrip() if boot[sig] == 0x29 else ""
        self.total_bytes = clusters * self._cluster_size  # the data area, as df counts it

    @cached_property
    def free_bytes(self) -> int:
        # Counted from the FAT: FAT32's FSInfo count is only a hint, often stale.
        if self._bits == 12:
            free = sum(1 for n in range(2, self._clusters + 2) if self._entry(n) == 0)
        else:
            free, width = 0, self._bits // 8
            for start in range(0, self._fat_len, _PAGE):
                page = self._read(self._fat_pos + start, min(_PAGE, self._fat_len - start))
                planes = [page[i::width] for i in range(width)]
                planes[-1] = planes[-1].translate(_LOW_NIBBLE) if width == 4 else planes[-1]
                # OR the bytes of each entry together: a free entry is the one whose OR is zero.
                ored = 0
                for plane in planes:
                    ored |= int.from_bytes(plane, "little")
                free += ored.to_bytes(len(planes[0]), "little").count(0)
            free -= sum(1 for n in (0, 1) if self._entry(n) == 0)  # entries 0 and 1 are no clusters
        return free * self._cluster_size

    def entries(self, path: str) -> list[Entry]:
        entry, cluster = self._lookup(path)
        if entry.kind != "dir":
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        return list(self._dir(cluster, path).entries)

    def stat(self, path: str) -> Entry:
        return self._lookup(path)[0]

    def open(self, path: str) -> BinaryIO:
        entry, cluster = self._lookup(path)
        if entry.kind == "dir":
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        extents, at = [], 0
        if entry.size:
            need = -(-entry.size // self._cluster_size)
            runs, count = self._runs(cluster, need, path)
            if count < need:
                raise FatError(f"{self._where}: {path}: its cluster chain ends short of its {entry.size} bytes")
            for first, length in runs:
                extents.append((at, self._base + self._cluster_pos(first), length * self._cluster_size))
                at += length * self._cluster_size
        return io.BufferedReader(_FatFile(self, path, entry.size, extents), buffer_size=_PAGE)

    def _lookup(self, path: str) -> tuple[Entry, int | None]:
        entry, cluster, walked = _ROOT, self._root, "/"
        for part in path.split("/"):
            if part in (".", ".."):
                raise FatError(f"{self._where}: {path}: '.' and '..' are not allowed in a path")
            if not part:
                continue
            if entry.kind != "dir":
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            found = self._dir(cluster, walked).names.get(part.casefold())
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            (entry, cluster), walked = found, f"{walked.rstrip('/')}/{found[0].name}"
        return entry, cluster

    def _dir(self, cluster: int | None, path: str) -> _Dir:
        if (found := self._dirs.get(cluster)) is not None:
            return found
        if cluster is None:
            data = self._read(self._root_pos, self._root_len)
        else:
            most = _MAX_DIR // self._cluster_size
            runs, count = self._runs(cluster, most + 1, path)
            if count > most:
                raise FatError(f"{self._where}: directory {path} is larger than FAT allows (65,536 entries)")
            data = b"".join(self._read(self._cluster_pos(first), n * self._cluster_size) for first, n in runs)
        if len(self._dirs) >= _KEPT:
            self._dirs.clear()
        parsed = self._dirs[cluster] = self._parse_dir(data)
        return parsed

    def _parse_dir(self, data: bytes) -> _Dir:
        entries, names, label = [], {}, ""
        lfn = seq = checksum = 0  # where the long name's slots began (+1): they precede their 8.3 entry
        for i, (short, attr, case, tag, _, _, _, hi, time, date, lo, size) in enumerate(_SLOT.iter_unpack(data)):
            first = short[0]
            if first == 0:
                break  # the end of the directory: nothing after it is in use
            if first == 0xE5:
                lfn = 0  # deleted
            elif attr & 0x3F == 0x0F:
                if first & 0x40 and first & 0x1F:
                    lfn, seq, checksum = i + 1, first & 0x1F, tag
                elif lfn and first & 0x1F == seq - 1 and tag == checksum:
                    seq -= 1
                else:
                    lfn = 0  # an orphan slot: a tool that knows no long names rewrote its 8.3 entry
            elif attr & 0x08:
                label, lfn = label or _oem(short).rstrip(), 0
            elif first == 0x2E:
                lfn = 0  # "." and ".."
            else:
                name = ""
                if lfn and seq == 1 and checksum == _checksum(short):
                    slots = [
                        data[at + 1 : at + 11] + data[at + 14 : at + 26] + data[at + 28 : at + 32]
                        for at in range((i - 1) * 32, (lfn - 2) * 32, -32)
                    ]  # last slot holds the end
                    name = codecs.utf_16_le_decode(b"".join(slots), "replace")[0].partition("\0")[0]
                lfn = 0
                if not name:
                    text = _oem(b"\xe5" + short[1:] if first == 0x05 else short)
                    base, ext = text[:8].rstrip(), text[8:].rstrip()
                    base, ext = base.lower() if case & 0x08 else base, ext.lower() if case & 0x10 else ext
                    name = f"{base}.{ext}" if ext else base
                if not name or "/" in name or "\0" in name or name in (".", ".."):
                    continue  # a damaged or hostile name must not reach a path
                is_dir = attr & 0x10
                mode = (0o555 if is_dir else 0o444) if attr & 0x01 else (0o755 if is_dir else 0o644)
                entry = Entry(name, "dir" if is_dir else "file", 0 if is_dir else size, _mtime(date, time), mode)
                entries.append(entry)
                names[name.casefold()] = (entry, (hi << 16 | lo) if self._bits == 32 else lo)
        return _Dir(entries, names, label)

    def _cluster_pos(self, cluster: int) -> int:
        return self._data_pos + (cluster - 2) * self._cluster_size

    def _entry(self, n: int) -> int:
        """The FAT's entry for cluster n: the next cluster of its chain, 0 if free, >= _eoc at the end."""
        if self._bits == 12:
            fat = self._page(0)  # a FAT12 FAT is at most 6 KiB: one page
            pair = fat[n + n // 2] | fat[n + n // 2 + 1] << 8
            return pair >> 4 if n & 1 else pair & 0xFFF
        per = _PAGE * 8 // self._bits
        return self._page(n // per)[n % per] & 0x0FFFFFFF

    def _page(self, i: int) -> bytes | array.array:
        if (page := self._pages.get(i)) is None:
            if len(self._pages) >= _KEPT:
                self._pages.clear()
            page = self._read(self._fat_pos + i * _PAGE, min(_PAGE, self._fat_len - i * _PAGE))
            if self._bits > 12:
                page = array.array("H" if self._bits == 16 else "I", page)
                if sys.byteorder == "big":
                    page.byteswap()
            self._pages[i] = page
        return page

    def _runs(self, first: int, most: int, what: str) -> tuple[list[tuple[int, int]], int]:
        """The chain from `first`, `most` clusters at most, as runs of contiguous clusters (first, count)."""
        runs, start, length, count, cluster, fast = [], first, 0, 0, first, True
        while True:
            if not 2 <= cluster < self._clusters + 2:
                raise FatError(
                    f"{self._where}: {what}: its cluster chain is broken (cluster {cluster:#x} is free, bad "
                    f"or outside the FAT)"
                )
            if fast and (ahead := self._contiguous(cluster, most - count - 1)):
                length, count, cluster = length + ahead, count + ahead, cluster + ahead
                continue
            length, count = length + 1, count + 1
            after = self._entry(cluster)
            if after >= self._eoc or count == most:
                break
            if after != cluster + 1:
                runs.append((start, length))
                start, length, fast = after, 0, True
            else:
                fast = False  # a run shorter than a block: one entry at a time to its end
            cluster = after
        runs.append((start, length))
        # A chain that loops passes a cluster twice: two of its runs overlap.
        spans = sorted(runs)
        for (a, n), (b, _) in zip(spans, spans[1:], strict=False):
            if b < a + n:
                raise FatError(f"{self._where}: {what}: its cluster chain loops (through cluster {b})")
        return runs, count

    def _contiguous(self, cluster: int, most: int) -> int:
        """256 or `most` if the FAT's entries from `cluster` on each point to the next cluster, else 0:
        a run compared as a block, which is what makes opening a 1 GiB file quick."""
        if self._bits == 12 or most <= 0:
            return 0
        per = _PAGE * 8 // self._bits
        page, at = self._page(cluster // per), cluster % per
        n = min(most, 256, len(page) - at)
        return n if page[at : at + n] == array.array(page.typecode, range(cluster + 1, cluster + 1 + n)) else 0

    def _read(self, pos: int, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = os.pread(self._fd, min(n - got, _CHUNK), self._base + pos + got)
            if not part:
                raise FatError(f"{self._where}: the image ends at byte {pos + got} of the filesystem (truncated?)")
            parts.append(part)
            got += len(part)
        return b"".join(parts)


class _FatFile(io.RawIOBase):
    """A file's bytes, read straight from its extents (runs of contiguous clusters) with one pread each."""

    def __init__(self, volume: FatVolume, name: str, size: int, extents: list[tuple[int, int, int]]) -> None:
        self.name, self._volume, self._size, self._pos = name, volume, size, 0
        self._extents = extents  # (offset in the file, offset in the image, length)
        self._starts = [start for start, _, _ in extents]

    def readable(self) -> bool:
        return True

    seekable = readable

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        pos += {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readall(self) -> bytes:
        return self.read(max(0, self._size - self._pos))

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            start, at, length = self._extents[bisect.bisect_right(self._starts, self._pos) - 1]
            skip = self._pos - start
            n = min(len(view) - done, length - skip, self._size - self._pos, _CHUNK)
            got = os.preadv(self._volume._fd, [view[done : done + n]], at + skip)
            if got <= 0:
                raise FatError(f"{self._volume._where}: {self.name}: the image ends inside the file (truncated?)")
            done, self._pos = done + got, self._pos + got
        return done
