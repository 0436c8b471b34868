"""vdsm's file data domain on an NFS share, as the engine finds it when it imports the domain.

The layout (the contract with whoever lays a domain out; README "Importing a storage domain"):

    SD_ID/dom_md/metadata                 KEY=VALUE lines, sorted, then _SHA_CKSUM (vdsm's seal)
    SD_ID/dom_md/ids, leases, inbox, outbox, xleases
    SD_ID/images/IMG_ID/VOL_ID(.meta, .lease)   each volume, its metadata (volume_meta.py)
    an OVF_STORE image: a RAW volume whose .meta says DISKTYPE=OVFS, its DESCRIPTION a JSON with
    "Disk Description": "OVF_STORE"; the volume is a tar of VM_ID.ovf files and info.json.

Only reading and writing files here: what the engine does with them is engine/imported_domains.py.
"""

import datetime
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ovirtsim import volume_meta

DOM_MD_FILES = ("ids", "leases", "inbox", "outbox", "xleases")
# The date format of the engine's OVF_STORE descriptions: Java's Date.toString().
OVF_STORE_DATE = "%a %b %d %H:%M:%S %Z %Y"


class DomainError(ValueError):
    """What vdsm reports reading a domain that is not one (a broken seal, a missing key)."""


def seal(fields: dict) -> str:
    """vdsm's metadata file text: sorted KEY=VALUE lines, then _SHA_CKSUM over the joined lines."""
    lines = [f"{key}={fields[key]}" for key in sorted(fields)]
    return "\n".join([*lines, f"_SHA_CKSUM={_checksum(lines)}"]) + "\n"


def _checksum(lines: list[str]) -> str:
    return hashlib.sha1("".join(lines).encode("ascii", "xmlcharrefreplace")).hexdigest()


def read_metadata(path: Path) -> dict:
    """A domain's dom_md/metadata; raises DomainError when vdsm would refuse it (MetaDataSealIsBroken)."""
    fields, checksum = {}, None
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "_SHA_CKSUM":
            checksum = value
        else:
            fields[key] = value
    lines = [f"{key}={fields[key]}" for key in sorted(fields)]
    if checksum is not None and _checksum(lines) != checksum:
        raise DomainError(f"Meta Data seal is broken (checksum mismatch): 'cksum = {checksum}'")
    for key in ("SDUUID", "CLASS", "VERSION"):
        if key not in fields:
            raise DomainError(f"the domain metadata {path} has no {key}")
    return fields


def write_metadata(path: Path, fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(seal(fields))


def domains_on(share: Path) -> list[tuple[Path, dict | DomainError]]:
    """Every domain directory on a share (vdsm's getStorageDomainsList of a file connection): each
    with its metadata, or the error reading it."""
    found = []
    for entry in sorted(share.iterdir()) if share.is_dir() else []:
        metadata = entry / "dom_md" / "metadata"
        if not metadata.is_file():
            continue
        try:
            found.append((entry, read_metadata(metadata)))
        except (OSError, DomainError) as e:
            found.append((entry, DomainError(str(e))))
    return found


@dataclass
class Image:
    """An image of the domain as its volumes' .meta describe it: the chain base first."""

    id: str
    volumes: list[dict]  # {"id", "format": cow|raw, "meta": {...}}, base first

    @property
    def leaf(self) -> dict:
        return self.volumes[-1]

    @property
    def description(self) -> dict:
        try:
            return json.loads(self.volumes[0]["meta"].get("DESCRIPTION") or "{}")
        except ValueError:
            return {}

    @property
    def ovf_store(self) -> bool:
        return self.leaf["meta"].get("DISKTYPE") == "OVFS" or self.description.get("Disk Description") == "OVF_STORE"


def images(root: Path) -> list[Image]:
    """The images of a domain (vdsm's getImagesList + getVolumesList), each chain following the
    volumes' PUUID; an image whose .meta files make no single chain is left out."""
    found = []
    images_dir = root / "images"
    for image_dir in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        metas = {}
        for meta_file in image_dir.glob("*.meta"):
            volume_id = meta_file.name[: -len(".meta")]
            try:
                metas[volume_id] = volume_meta.parse(meta_file.read_text())
            except OSError:
                continue
        by_parent = {m.get("PUUID", volume_meta.BLANK_UUID): v for v, m in metas.items()}
        chain, parent = [], volume_meta.BLANK_UUID
        while parent in by_parent and len(chain) <= len(metas):
            volume_id = by_parent[parent]
            meta = metas[volume_id]
            chain.append({"id": volume_id, "format": "cow" if meta.get("FORMAT") == "COW" else "raw", "meta": meta})
            parent = volume_id
        if chain and len(chain) == len(metas) and all((image_dir / v["id"]).is_file() for v in chain):
            found.append(Image(image_dir.name, chain))
    return found


def _store_date(description: dict) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(str(description["Last Updated"]), OVF_STORE_DATE)
    except (KeyError, ValueError):
        return None


def latest_ovf_stores(all_images: list[Image]) -> list[Image]:
    """The OVF_STORE images in the order the engine tries them (getLatestOVFDisk): those marked
    Updated before the others, the newest "Last Updated" first; one without a date is skipped."""
    stores = [(i, _store_date(i.description)) for i in all_images if i.ovf_store]
    dated = [(i, d) for i, d in stores if d is not None]
    dated.sort(key=lambda pair: (bool(pair[0].description.get("Updated")), pair[1]), reverse=True)
    return [i for i, _ in dated]


def newest_ovf_store_entities(root: Path) -> tuple[dict[str, str] | None, int]:
    """The entities of the first OVF_STORE that reads, in the engine's order ({id: OVF}, or None
    when none does), and how many OVF_STOREs the domain has."""
    stores = latest_ovf_stores(images(root))
    for image in stores:
        try:
            return read_ovf_store(root / "images" / image.id / image.leaf["id"], image.description.get("Size")), len(
                stores
            )
        except (OSError, tarfile.TarError, ValueError):
            continue
    return None, len(stores)


def read_ovf_store(volume: Path, size: int | None = None) -> dict[str, str]:
    """The OVFs of an OVF_STORE volume: {entity id: OVF text}, from the tar's `ID.ovf` entries (the
    engine reads `Size` bytes, the rest is padding); raises tarfile.TarError when it is no tar."""
    data = volume.read_bytes()
    if size:
        data = data[:size]
    ovfs = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".ovf"):
                ovfs[member.name[: -len(".ovf")]] = tar.extractfile(member).read().decode("utf-8")
    return ovfs


def write_ovf_store(
    root: Path, *, image_id: str, volume_id: str, ovfs: dict[str, str], updated: datetime.datetime | None = None
) -> Path:
    """An OVF_STORE image holding these OVFs ({vm id: text}), as the engine's OvfDataUpdater writes
    one (a RAW volume of 1 MiB steps, the tar zero padded, its description the JSON the engine
    reads back). Returns the volume."""
    sd_id = root.name
    updated = updated or datetime.datetime.now(datetime.UTC)
    when = updated.strftime("%a %b %d %H:%M:%S UTC %Y")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        files = {f"{vm_id}.ovf": text.encode("utf-8") for vm_id, text in ovfs.items()}
        files["info.json"] = json.dumps({"Last Updated": when, "Storage Domains": [{"uuid": sd_id}]}).encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(updated.timestamp())
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    capacity = max(1024**2, -(-len(data) // 1024**2) * 1024**2)
    image_dir = root / "images" / image_id
    image_dir.mkdir(parents=True, exist_ok=True)
    volume = image_dir / volume_id
    volume.write_bytes(data + b"\0" * (capacity - len(data)))
    description = {
        "Updated": True,
        "Size": len(data),
        "Last Updated": when,
        "Storage Domains": [{"uuid": sd_id}],
        "Disk Description": "OVF_STORE",
    }
    fields = {
        "CAP": capacity,
        "CTIME": int(updated.timestamp()),
        "DESCRIPTION": json.dumps(description),
        "DISKTYPE": "OVFS",
        "DOMAIN": sd_id,
        "FORMAT": "RAW",
        "GEN": 0,
        "IMAGE": image_id,
        "LEGALITY": "LEGAL",
        "PUUID": volume_meta.BLANK_UUID,
        "TYPE": "PREALLOCATED",
        "VOLTYPE": "LEAF",
    }
    volume_meta.meta_path(volume).write_text(volume_meta.render(fields))
    (image_dir / f"{volume_id}.lease").write_bytes(b"")
    return volume


def domain_fields(*, sd_id: str, description: str, remote_path: str, pool_id: str = "") -> dict:
    """vdsm's metadata of a new NFS data domain (storage format V5)."""
    return {
        "ALIGNMENT": "1048576",
        "BLOCK_SIZE": "512",
        "CLASS": "Data",
        "DESCRIPTION": description,
        "IOOPTIMEOUTSEC": "10",
        "LEASERETRIES": "3",
        "LEASETIMESEC": "60",
        "LOCKPOLICY": "",
        "LOCKRENEWALINTERVALSEC": "5",
        "POOL_UUID": pool_id,
        "REMOTE_PATH": remote_path,
        "ROLE": "Regular",
        "SDUUID": sd_id,
        "TYPE": "NFS",
        "VERSION": "5",
    }


def write_domain(share: Path, *, sd_id: str, description: str, remote_path: str) -> Path:
    """An empty data domain's directories and dom_md on a share; returns SD_ID's directory. Images
    (and an OVF_STORE: write_ovf_store) go under its `images`."""
    root = share / sd_id
    (root / "images").mkdir(parents=True, exist_ok=True)
    write_metadata(
        root / "dom_md" / "metadata", domain_fields(sd_id=sd_id, description=description, remote_path=remote_path)
    )
    for name in DOM_MD_FILES:
        (root / "dom_md" / name).touch()
    return root
