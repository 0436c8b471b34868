"""The manifest of a backup point: what it holds, read and written here and nowhere else.

`manifest.json` is written last, atomically; a directory without one is not a backup. Each
stored file's checksum is in it, so a damaged or truncated file is found in time proportional
to what a point stores (an incremental's layer, not its whole chain).

Format versions:
  1  the first; the snapshot kept for the next incremental is `engine_snapshot_id` (a file
     written before versions were recorded is read as version 1)
  2  the base kept on the engine is strategy-neutral: `base_kind` ("snapshot", "checkpoint"
     or null) and `base_id`; stored files are checksummed with BLAKE3 ("blake3:HEX"; older
     points keep their "sha256:HEX"); `manifest_checksum` is the BLAKE3 of the manifest's own
     JSON without that field, so a damaged manifest is told from a good one (damage only: anyone
     can compute it again after an edit, so the database's checksums are what a point is held to,
     see repository.verify). Points written since the OVF's checksum is recorded also carry
     `ovf_checksum`, the BLAKE3 of vm.ovf (in the database too); older ones have none and still read.

A manifest names only plain file names in its own point's directory (no '/', no '..'); a disk's
`parent_file` is exactly "../PARENT_BACKUP_ID/NAME". Anything else is refused as it is read, so no
reader of a point can be sent to a file elsewhere. A manifest of version 2 or later without its
own checksum is refused: every version-2 manifest was written with one (version 1 had none, and
is read as before).
"""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import blake3

from repository.storage import RepositoryError, atomic_write

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
OVF = "vm.ovf"


@dataclass
class ManifestDisk:
    """One disk's stored image."""

    disk_id: str
    alias: str
    file: str  # a plain file name in the point's directory
    format: str  # of the stored file: "qcow2" or "raw"
    virtual_size: int
    stored_size: int
    checksum: str  # "ALGORITHM:HEX" of the stored file's bytes (blake3; sha256 before format 2)
    disk_format: str = "cow"  # of the disk on the engine: "cow" or "raw"
    sparse: bool = True
    backup_enabled: bool = False  # incremental backup enabled on the engine
    storage_domain_id: str | None = None
    parent_file: str | None = None  # the backing file of an incremental layer, relative to this point
    # A consolidation under way (repository/consolidate.py): the checksum of this disk's standalone
    # image, which shows the guest the same content as the layer and may already be in its place.
    merged_checksum: str | None = None

    @property
    def checksums(self) -> tuple[str, ...]:
        """Every checksum the file may have: its own, and during a consolidation its merged image's."""
        return (self.checksum, self.merged_checksum) if self.merged_checksum else (self.checksum,)


@dataclass
class Manifest:
    """One backup point, as its directory describes it."""

    vm_id: str
    vm_name: str
    backup_id: str
    strategy: str
    type: str  # "full" or "incremental"
    consistency: str
    created: str  # ISO 8601
    disks: list[ManifestDisk] = field(default_factory=list)
    parent_backup_id: str | None = None
    base_kind: str | None = None  # what is kept on the engine for the next incremental
    base_id: str | None = None
    ovf: str = OVF
    ovf_checksum: str | None = None  # "blake3:HEX" of the OVF; None in points written before it was recorded
    checksum_algorithm: str = "blake3 of each stored file"
    format_version: int = FORMAT_VERSION

    def disk(self, ref: str) -> ManifestDisk | None:
        """A disk by engine id or alias."""
        return next((d for d in self.disks if ref in (d.disk_id, d.alias)), None)

    def to_json(self) -> bytes:
        body = asdict(self)
        for disk in body["disks"]:
            if disk["merged_checksum"] is None:
                del disk["merged_checksum"]  # only while a consolidation is under way
        return json.dumps(body | {"manifest_checksum": _own_checksum(body)}, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "manifest") -> "Manifest":
        try:
            body = json.loads(text)
            claimed = body.pop("manifest_checksum", None)
            if claimed is not None and claimed != _own_checksum(body):
                raise RepositoryError(
                    f"{where} is corrupt: its content does not match its own checksum (it was changed or damaged "
                    "after it was written)."
                )
            version = body.get("format_version", 1)
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise RepositoryError(
                    f"{where} has format version {version!r}; this version of the service reads up to "
                    f"{FORMAT_VERSION}. Upgrade the service to read it."
                )
            if version < 1:
                raise RepositoryError(f"{where} is corrupt: it has format version {version}, and versions start at 1.")
            if claimed is None and version >= 2:
                raise RepositoryError(
                    f"{where} is not trusted: it has no checksum of its own, which every manifest of format "
                    "version 2 and later is written with (it was removed after the backup was written)."
                )
            if version < 2:
                snapshot = body.pop("engine_snapshot_id", None)
                body["base_kind"], body["base_id"] = ("snapshot", snapshot) if snapshot else (None, None)
            body["format_version"] = version
            known = {f.name for f in fields(ManifestDisk)}
            body["disks"] = [ManifestDisk(**{k: v for k, v in d.items() if k in known}) for d in body["disks"]]
            known = {f.name for f in fields(cls)}
            manifest = cls(**{k: v for k, v in body.items() if k in known})
        except RepositoryError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise RepositoryError(f"{where} is corrupt: {type(e).__name__}: {e}") from None
        confined = _outside_names(manifest)
        if confined:
            raise RepositoryError(
                f"{where} is not trusted: {confined}; a manifest may name only files in its own backup's "
                "directory (plain file names, without '/' or '..') and its parent backup's (../PARENT_ID/NAME)."
            )
        return manifest

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise RepositoryError(f"{directory} has no manifest: it is not a complete backup") from None
        return cls.from_json(text, where=str(path))

    def write(self, directory: Path) -> None:
        self.format_version = FORMAT_VERSION
        atomic_write(directory / MANIFEST, self.to_json())


def _plain_name(name: object) -> bool:
    """A file name in one directory: not a path, not '.' or '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _outside_names(manifest: Manifest) -> str:
    """What a manifest names outside its point's directory, in words ("" when nothing)."""
    if not _plain_name(manifest.ovf):
        return f"its OVF is {manifest.ovf!r}"
    for disk in manifest.disks:
        if not _plain_name(disk.file):
            return f"disk {disk.alias} is stored in {disk.file!r}"
        if disk.parent_file is not None:
            parts = disk.parent_file.split("/") if isinstance(disk.parent_file, str) else []
            if len(parts) != 3 or parts[0] != ".." or not all(map(_plain_name, parts[1:])):
                return f"disk {disk.alias} builds on {disk.parent_file!r}, not on a file of its parent backup"
    return ""


def _own_checksum(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"blake3:{blake3.blake3(canonical).hexdigest()}"
