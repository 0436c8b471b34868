"""Writing one backup point: the only way strategies put data into a destination.

A PointWriter owns the point's row, its directory, the temporary names and renames, the
free-space check, the checksums, the DiskBackup rows and the manifest, written last. Whatever
happens before `complete()`, `abandon()` leaves no half-written point behind and older points
untouched.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3
from django.db import transaction
from django.utils import timezone

from jobs.errors import JobError
from repository.manifest import OVF, Manifest, ManifestDisk
from repository.models import BackupDestination, BackupPoint, DiskBackup
from repository.storage import (
    PointDir,
    RepositoryError,
    atomic_write,
    checksum_file,
    destination_full,
    free_bytes,
    fsync_dir,
    fsync_file,
)

MiB = 1024**2
HEADROOM = 16 * MiB  # the OVF, the manifest, QCOW2 metadata


@dataclass
class StoredDisk:
    """A disk image committed to the point, waiting for its checksum."""

    entry: ManifestDisk
    inventory_disk: object  # inventory.Disk
    parent: DiskBackup | None
    digest: Future


class PointWriter:
    def __init__(self, point: BackupPoint):
        self.point = point
        self.directory: PointDir = point.directory
        self._stored: list[StoredDisk] = []
        self._ovf_checksum: str | None = None
        # Each file is hashed in the background once complete, while the next disk moves.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checksum")

    @classmethod
    def start(
        cls,
        *,
        vm,
        destination: BackupDestination,
        strategy: str,
        job=None,
        policy=None,
        parent: BackupPoint | None = None,
        note: str = "",
        needed_bytes: int,
    ) -> "PointWriter":
        """Check the room on the destination, then create the point's row and its directory."""
        from repository.consolidate import clean_staging

        # A merge a killed prune left half-way may hold the room this backup needs.
        clean_staging(destination=destination, vm=vm, job=job)
        needed = needed_bytes + HEADROOM
        free = free_bytes(destination.checked_path())
        if free < needed:
            raise JobError(
                f"Destination {destination.name} has {free // MiB} MiB free; this backup needs about "
                f"{needed // MiB} MiB. Nothing was written and older backups are untouched."
            )
        point = BackupPoint.objects.create(
            vm=vm,
            destination=destination,
            policy=policy,
            job=job,
            strategy=strategy,
            type=BackupPoint.Type.INCREMENTAL if parent else BackupPoint.Type.FULL,
            parent=parent,
            note=note,
        )
        writer = cls(point)
        try:
            writer.directory.create()
        except OSError as e:
            writer.abandon()
            raise JobError(
                f"Cannot create the backup's directory {writer.directory.path}: {e.strerror or e}."
            ) from None
        return writer

    def make_full(self, note: str) -> None:
        """The engine refused the incremental this point was started as: before any disk is stored,
        it becomes a full, saying why."""
        if self._stored:
            raise ValueError("A point with stored disks cannot become a full.")
        point = self.point
        point.parent, point.type, point.note = None, BackupPoint.Type.FULL, note
        point.save(update_fields=["parent", "type", "note"])

    def part(self, name: str) -> Path:
        """Where a file is written until it is complete."""
        return self.directory.part(name)

    def parent_file(self, disk_id: str, name: str) -> tuple[DiskBackup | None, str | None]:
        """The parent point's record of this disk and its file as a backing path relative to this point."""
        parent = self.point.parent
        record = parent.disks.filter(disk__engine_id=disk_id).first() if parent else None
        return record, (f"../{parent.uuid}/{name}" if record else None)

    def write_ovf(self, ovf: str) -> None:
        """Save the VM's OVF; its checksum goes into the manifest and the point's row, so an OVF changed
        afterwards is never restored."""
        data = ovf.encode()
        atomic_write(self.directory.path / OVF, data)
        self._ovf_checksum = f"blake3:{blake3.blake3(data).hexdigest()}"

    def hash_soon(self, part: Path) -> Future:
        """Start hashing a finished temporary file (it may be renamed meanwhile)."""
        return self._hasher.submit(checksum_file, open(part, "rb"))

    def commit_disk(
        self, name: str, *, entry: ManifestDisk, inventory_disk, parent: DiskBackup | None, digest: Future | None = None
    ) -> Path:
        """Rename a finished temporary file to its name; its checksum goes into the manifest."""
        digest = digest or self.hash_soon(self.part(name))
        final = self.directory.commit(name)
        entry.file = name
        self._stored.append(StoredDisk(entry, inventory_disk, parent, digest))
        return final

    def complete(
        self, *, consistency: str, base_kind: str = "", base_id: str = "", bytes_read: int, note: str = ""
    ) -> BackupPoint:
        """Write the manifest (last), then mark the point complete with its disks; `note` (why the
        point is what it is, e.g. crash-consistent) is added to the point's note."""
        point, directory = self.point, self.directory
        stored_total = 0
        for stored in self._stored:
            stored.entry.checksum = stored.digest.result()
            stored.entry.stored_size = (directory.path / stored.entry.file).stat().st_blocks * 512
            stored_total += stored.entry.stored_size
        # The manifest says the point is whole and is itself fsynced: the files it names, and their
        # renames, must be on the disk before it, or a power loss after "Succeeded" can leave a
        # complete-looking point whose files are empty (ext4 and XFS write data back later than a rename).
        self._flush([directory.path / s.entry.file for s in self._stored])
        parent = point.parent
        Manifest(
            vm_id=str(point.vm.engine_id),
            vm_name=point.vm.name,
            backup_id=str(point.uuid),
            strategy=point.strategy,
            type=point.type,
            consistency=consistency,
            created=point.started.isoformat(),
            disks=[s.entry for s in self._stored],
            parent_backup_id=str(parent.uuid) if parent else None,
            base_kind=base_kind or None,
            base_id=base_id or None,
            ovf_checksum=self._ovf_checksum,
        ).write(directory.path)
        with transaction.atomic():
            for stored in self._stored:
                DiskBackup.objects.create(
                    point=point,
                    disk=stored.inventory_disk,
                    file=directory.relative(stored.entry.file),
                    format=stored.entry.format,
                    virtual_size=stored.entry.virtual_size,
                    stored_size=stored.entry.stored_size,
                    parent=stored.parent,
                    checksum=stored.entry.checksum,
                )
            point.status = BackupPoint.Status.COMPLETE
            point.finished = timezone.now()
            point.bytes_transferred = bytes_read
            point.bytes_stored = stored_total
            point.ovf_path = directory.relative(OVF)
            point.ovf_checksum = self._ovf_checksum or ""
            point.consistency = consistency
            point.note = " ".join(n for n in (point.note, note) if n)
            point.base_kind = base_kind
            point.base_id = base_id
            point.save()
        self._hasher.shutdown()
        return point

    def _flush(self, files: list[Path]) -> None:
        """fsync the point's files, then its directory, the VM's and the destination's (the renames
        and, for a VM's first point, the directories made); a failure in words."""
        directory = self.directory.path
        for path in [*files, directory, directory.parent, self.directory.root]:
            try:
                (fsync_dir if path.is_dir() else fsync_file)(path)
            except OSError as e:
                cause = e.strerror or str(e)
                raise destination_full(directory, cause) or RepositoryError(
                    f"Flushing {path} to the destination's disk failed: {cause}. This backup's files are removed "
                    "and older backups are untouched; check the destination's storage."
                ) from e

    def abandon(self) -> None:
        """The backup failed or was cancelled: nothing of it stays (see BackupPoint.discard)."""
        self._hasher.shutdown(cancel_futures=True)
        self.point.discard()
