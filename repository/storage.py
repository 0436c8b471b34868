"""The repository format on a filesystem destination (see DESIGN.md).

    DEST/VM_UUID/BACKUP_ID/vm.ovf
    DEST/VM_UUID/BACKUP_ID/DISK_UUID.qcow2    full: standalone; incremental: backing file ../PARENT/DISK.qcow2
    DEST/VM_UUID/BACKUP_ID/manifest.json      written last, atomically

Files are written under a temporary name and renamed when complete; the manifest is written
last and fsynced, so a directory without a manifest is an unfinished backup and is ignored.

The manifest itself is read and written by repository.manifest.
"""

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import blake3

from core.errors import OperatorError


class RepositoryError(OperatorError):
    """A backup on a destination cannot be read or written as it should; the message says why."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def checksum_file(f, algorithm: str = "blake3") -> str:
    """ "ALGORITHM:HEX" of an open binary file's bytes; it closes the file, which may be renamed meanwhile.

    BLAKE3 reads the file through a memory map with a thread per core, so the pass that follows a
    download costs about half of a sha256 one (the file was written with O_DIRECT and is read from
    the disk again); sha256 stays readable for points written before."""
    with f:
        if algorithm == "blake3":
            digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
            if os.fstat(f.fileno()).st_size:  # an empty file cannot be mapped
                digest.update_mmap(f"/proc/self/fd/{f.fileno()}")
        elif algorithm == "sha256":
            digest = hashlib.sha256()
            while chunk := f.read(4 * 1024 * 1024):
                digest.update(chunk)
        else:
            raise RepositoryError(f"Unknown checksum algorithm {algorithm!r}.")
    return f"{algorithm}:{digest.hexdigest()}"


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


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
