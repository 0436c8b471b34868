"""The temporary storage domain an instant restore boots from, laid out as vdsm lays out a file data
domain, so that the engine imports it from an NFS share as it would any domain:

    ROOT/SD_ID/dom_md/metadata, ids, leases, inbox, outbox, xleases
    ROOT/SD_ID/images/IMAGE_ID/VOLUME_ID(.meta, .lease)   each disk: the point's chain, then a new top
    ROOT/SD_ID/images/OVF_IMAGE/OVF_VOLUME(.meta, .lease) the OVF store: a tar of VM_ID.ovf, info.json

ROOT is beside the point, in the destination (DEST/.instant/ID), so the point's files are hard links
in it (nothing is copied, the same inodes: their checksums are the backup's); they stay root's and
read-only for everybody else, and the hosts, who write as vdsm (36:36), can write only the new top
layers. Every id is new (the original VM and disks may still exist on the engine); the VM's OVF is
the point's with those ids. Written before the share is exported: files changed behind an NFS
server's back go stale for its clients."""

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from recovery.instant.errors import InstantError
from recovery.vdsm import own, volume_meta
from repository.manifest import ManifestDisk
from repository.models import BackupPoint
from repository.ovf import disk_volumes, without_disks
from repository.storage import RepositoryError
from repository.verify import chain_files, chain_formats, manifest_problems, read_ovf

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
OVF_STORE_SIZE = 1024**2
DOMAIN_FILES = ("ids", "leases", "inbox", "outbox", "xleases")
INSTANT_DIR = ".instant"  # in the destination's directory; no VM directory starts with a dot


@dataclass
class LaidDisk:
    alias: str
    original_id: str  # the disk's id on the engine when it was backed up
    image_id: str  # the new disk's id
    volume_id: str  # its writable top volume
    chain: list[str]  # the point's files it reads, oldest first
    virtual_size: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Layout:
    root: Path  # the directory the NFS export serves
    domain_id: str
    vm_id: str
    disks: list[LaidDisk]

    @property
    def domain_dir(self) -> Path:
        return self.root / self.domain_id


def instant_root(point: BackupPoint, instant_id: int) -> Path:
    return Path(point.destination.checked_path()) / INSTANT_DIR / str(instant_id)


def lay_out(*, point: BackupPoint, root: Path, name: str, with_nics: bool = True) -> Layout:
    """Make the domain under `root` (which must not exist) for `point`. Raises InstantError in words;
    what it made is the caller's to remove (remove_layout)."""
    try:
        manifest = point.manifest()
        for problem in manifest_problems(point, manifest):
            raise RepositoryError(problem)
        ovf = read_ovf(point, manifest, warn=lambda _warning: None)
        chains = {e.disk_id: [path for path, _ in reversed(chain_files(point, e.disk_id))] for e in manifest.disks}
        formats = {e.disk_id: list(reversed(chain_formats(point, e.disk_id))) for e in manifest.disks}
        # Structure only: checksums would read the whole backup before it boots, which is what
        # instant restore avoids (the point's verify state says when they were last read, and
        # discarding reads them); `qemu-img check` reads a QCOW2's tables, not its data.
        for entry in manifest.disks:
            for path, fmt in zip(chains[entry.disk_id], formats[entry.disk_id], strict=True):
                _check_layer(path, fmt)
    except RepositoryError as e:
        raise InstantError(f"Backup {point.pk} is damaged: {e} It cannot be booted.") from None
    if not manifest.disks:
        raise InstantError(f"Backup {point.pk} holds no disk to boot from.")
    volumes = disk_volumes(ovf)
    missing = [e.alias for e in manifest.disks if e.disk_id not in volumes]
    if missing:
        raise InstantError(f"The point's OVF names no volume for disk {missing[0]}: it cannot be registered.")
    layout = Layout(root=root, domain_id=str(uuid.uuid4()), vm_id=str(uuid.uuid4()), disks=[])
    root.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir()
    own(root, 0o755)
    domain = layout.domain_dir
    for sub in ("", "dom_md", "images"):
        (domain / sub).mkdir(exist_ok=True)
        own(domain / sub, 0o755)
    for entry in manifest.disks:
        layout.disks.append(_lay_disk(domain, entry, chains[entry.disk_id], formats[entry.disk_id]))
    ovf = _ovf_for(ovf, point=point, layout=layout, volumes=volumes, with_nics=with_nics)
    _write_ovf_store(domain, layout, ovf, name)
    _write_metadata(domain, layout.domain_id, description=f"instant-{name}"[:50])
    return layout


def _check_layer(path: Path, fmt: str) -> None:
    if not path.is_file():
        raise RepositoryError(f"{path} is missing.")
    if fmt == "qcow2":
        checked = subprocess.run(
            ["qemu-img", "check", "-q", "-U", "-f", "qcow2", str(path)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            said = (checked.stderr or checked.stdout).strip().splitlines()
            raise RepositoryError(
                f"{path} is not a whole QCOW2 image ({said[0] if said else 'qemu-img check failed'})."
            )


def _lay_disk(domain: Path, entry: ManifestDisk, chain: list[Path], formats: list[str]) -> LaidDisk:
    image_id = str(uuid.uuid4())
    image_dir = domain / "images" / image_id
    image_dir.mkdir()
    own(image_dir, 0o755)
    parent = BLANK_UUID
    description = json.dumps({"DiskAlias": entry.alias, "DiskDescription": "instant restore"})
    for path, fmt in zip(chain, formats, strict=True):
        volume_id = str(uuid.uuid4())
        target = image_dir / volume_id
        try:
            os.link(path, target)
        except OSError as e:
            raise InstantError(
                f"The backup's file {path} cannot be linked into the temporary domain ({e.strerror}): an instant "
                "restore needs the destination on a filesystem of this node that has hard links."
            ) from None
        if not os.stat(target).st_mode & 0o004:
            raise InstantError(
                f"The backup's file {path} is not readable by others: the hosts (vdsm, 36:36) could not read it."
            )
        _volume_files(target, entry, image_id, domain.name, parent, fmt, leaf=False, description=description)
        parent = volume_id
    _resolve_backing_names(image_dir, chain, formats)
    top_id = str(uuid.uuid4())
    top = image_dir / top_id
    # Relative to the image directory as vdsm writes it; -u: the layer below is a backup file whose
    # own header names its place in the destination, which need not resolve from here.
    _run(
        [
            "qemu-img",
            "create",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-o",
            "compat=1.1",
            "-F",
            formats[-1],
            "-b",
            parent,
            str(top),
            str(entry.virtual_size),
        ]
    )
    own(top, 0o660)
    _volume_files(top, entry, image_id, domain.name, parent, "qcow2", leaf=True, description=description)
    return LaidDisk(entry.alias, entry.disk_id, image_id, top_id, [str(p) for p in chain], entry.virtual_size)


def _resolve_backing_names(image_dir: Path, chain: list[Path], formats: list[str]) -> None:
    """A host's qemu follows each QCOW2 layer's own header to its backing file. The point's
    incrementals name their parent by its place in the repository ("../PARENT/DISK.qcow2", relative);
    from the image directory that is images/PARENT/DISK.qcow2, so the parent is linked there too (a
    directory with no .meta file is no image to vdsm or the engine). The backup's files stay as they are."""
    images = image_dir.parent
    for parent, child, fmt in zip(chain, chain[1:], formats[1:], strict=False):
        if fmt != "qcow2":
            continue
        named = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(child)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        ).get("backing-filename", "")
        if not named or named.startswith("/"):
            raise InstantError(f"The backup's file {child} names its parent {named!r}, not by a relative path.")
        target = Path(os.path.normpath(image_dir / named))
        if target.parent.parent != images or target.exists():
            continue  # resolves elsewhere (or already does): nothing to link
        target.parent.mkdir(exist_ok=True)
        own(target.parent, 0o755)
        os.link(parent, target)


def _volume_files(
    volume: Path,
    entry: ManifestDisk,
    image_id: str,
    domain_id: str,
    parent: str,
    fmt: str,
    *,
    leaf: bool,
    description: str,
) -> None:
    fields = {
        "CAP": str(entry.virtual_size),
        "CTIME": str(int(time.time())),
        "DESCRIPTION": description,
        "DISKTYPE": "DATA",
        "DOMAIN": domain_id,
        "FORMAT": "COW" if fmt == "qcow2" else "RAW",
        "GEN": "0",
        "IMAGE": image_id,
        "LEGALITY": "LEGAL",
        "PUUID": parent,
        "TYPE": "SPARSE",
        "VOLTYPE": "LEAF" if leaf else "INTERNAL",
    }
    _write(volume.with_name(volume.name + ".meta"), volume_meta(fields))
    _write(volume.with_name(volume.name + ".lease"), "")


def _ovf_for(ovf: str, *, point: BackupPoint, layout: Layout, volumes: dict[str, str], with_nics: bool) -> str:
    """The point's OVF with the new ids: the VM's, each disk's (image and top volume) and the domain's."""
    ovf = without_disks(ovf, keep={d.original_id for d in layout.disks})
    if not with_nics:
        ovf = without_nics(ovf)
    replaced = {str(point.vm.engine_id): layout.vm_id}
    for disk in layout.disks:
        replaced[disk.original_id] = disk.image_id
        replaced[volumes[disk.original_id]] = disk.volume_id
    for domain_id in set(re.findall(r"StorageId>([0-9a-f-]{36})<", ovf)) | set(
        re.findall(r'storage_ids="([0-9a-f-]{36})"', ovf)
    ):
        replaced[domain_id] = layout.domain_id
    pattern = re.compile("|".join(re.escape(old) for old in replaced))
    return pattern.sub(lambda m: replaced[m.group(0)], ovf)


def without_nics(ovf: str) -> str:
    """The OVF without network interfaces (a restore proof boots the VM cut off from every network)."""
    import xml.etree.ElementTree as ET

    namespaces = dict(ev[1] for ev in ET.iterparse(io.StringIO(ovf), events=("start-ns",)))
    rasd = namespaces.get("rasd", "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData")
    root = ET.fromstring(ovf)
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == "Item" and child.findtext(f"{{{rasd}}}ResourceType") == "10":
                parent.remove(child)
    for prefix, uri in namespaces.items():
        if prefix:
            ET.register_namespace(prefix, uri)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _write_ovf_store(domain: Path, layout: Layout, ovf: str, name: str) -> None:
    """The engine's OVF_STORE disk: a tar of each VM's OVF and info.json, in a RAW volume."""
    updated = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    info = {"Last Updated": updated, "Storage Domains": [{"uuid": layout.domain_id}]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in ((f"{layout.vm_id}.ovf", ovf.encode()), ("info.json", json.dumps(info).encode())):
            item = tarfile.TarInfo(member)
            item.size, item.mtime, item.mode = len(data), int(time.time()), 0o644
            tar.addfile(item, io.BytesIO(data))
    data = archive.getvalue()
    image_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
    image_dir = domain / "images" / image_id
    image_dir.mkdir()
    own(image_dir, 0o755)
    volume = image_dir / volume_id
    with open(volume, "wb") as f:
        f.write(data)
        f.truncate(OVF_STORE_SIZE)
        f.flush()
        os.fsync(f.fileno())
    own(volume, 0o660)
    description = {
        "Updated": True,
        "Size": len(data),
        "Last Updated": updated,
        "Storage Domains": [{"uuid": layout.domain_id}],
        "Disk Description": "OVF_STORE",
    }
    fields = {
        "CAP": str(OVF_STORE_SIZE),
        "CTIME": str(int(time.time())),
        "DESCRIPTION": json.dumps(description),
        "DISKTYPE": "OVFS",
        "DOMAIN": layout.domain_id,
        "FORMAT": "RAW",
        "GEN": "0",
        "IMAGE": image_id,
        "LEGALITY": "LEGAL",
        "PUUID": BLANK_UUID,
        "TYPE": "PREALLOCATED",
        "VOLTYPE": "LEAF",
    }
    _write(volume.with_name(volume_id + ".meta"), volume_meta(fields))
    _write(volume.with_name(volume_id + ".lease"), "")


def _write_metadata(domain: Path, domain_id: str, *, description: str) -> None:
    """vdsm's dom_md of a file data domain (storage format V5), not attached to any pool yet."""
    for name in DOMAIN_FILES:
        _write(domain / "dom_md" / name, "")
    fields = {
        "ALIGNMENT": "1048576",
        "BLOCK_SIZE": "512",
        "CLASS": "Data",
        "DESCRIPTION": description,
        "IOOPTIMEOUTSEC": "10",
        "LEASERETRIES": "3",
        "LEASETIMESEC": "60",
        "LOCKPOLICY": "",
        "LOCKRENEWALINTERVALSEC": "5",
        "POOL_UUID": "",
        "REMOTE_PATH": "",
        "ROLE": "Regular",
        "SDUUID": domain_id,
        "TYPE": "NFS",
        "VERSION": "5",
    }
    lines = [f"{key}={fields[key]}" for key in sorted(fields)]
    checksum = hashlib.sha1("".join(lines).encode("ascii", "xmlcharrefreplace")).hexdigest()
    _write(domain / "dom_md" / "metadata", "\n".join([*lines, f"_SHA_CKSUM={checksum}"]) + "\n")


def top_bytes(root: Path, domain_id: str, disks: list[dict]) -> int:
    """What the writable top layers take on the node (allocated bytes): the room an instant restore uses."""
    total = 0
    for disk in disks:
        top = root / domain_id / "images" / disk["image_id"] / disk["volume_id"]
        if top.is_file():
            total += top.stat().st_blocks * 512
    return total


def remove_layout(root: Path) -> None:
    """Remove the temporary domain: its hard links and top layers (the point's files keep their
    other name, in the point's directory)."""
    if root.name.isdigit() and root.parent.name == INSTANT_DIR:
        shutil.rmtree(root, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    own(path, 0o644)


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstantError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()}")
