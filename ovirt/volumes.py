"""Volumes as a host sees them: a disk's volume chain from the engine's disk snapshots, and the
path vdsm gives each volume on a hypervisor (for strategies that read volumes over SSH).

The engine describes a disk's volumes as disk snapshots (`disks/{id}/disksnapshots`), each with
its `parent`; a snapshot's image of a disk is one of them. vdsm mounts a file storage domain's
storage connection `ADDRESS:PATH` at `/rhev/data-center/mnt/ADDRESS:PATH'` (PATH with `_` doubled,
then `/` made `_`), GlusterFS ones under `mnt/glusterSD/`, and keeps a disk's volumes in
`SD_ID/images/DISK_ID/VOLUME_ID`. On a block domain the volume group is named by the storage
domain's id and each volume is a logical volume named by its id: `/dev/SD_ID/VOLUME_ID`.
"""

from dataclasses import dataclass

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text

MOUNT_ROOT = "/rhev/data-center/mnt"
BLOCK_TYPES = (types.StorageType.ISCSI, types.StorageType.FCP)


@dataclass(frozen=True)
class Volume:
    id: str
    parent_id: str | None
    format: str  # "cow" or "raw"; "" when the engine did not say
    sparse: bool = True  # thin; only a disk's base volume may be preallocated


@dataclass(frozen=True)
class DomainLocation:
    """Where a storage domain's volumes are on a host."""

    id: str
    name: str
    block: bool
    mount_dir: str = ""  # file domains: the domain's directory, .../mnt/ADDRESS:_PATH/SD_ID

    def volume_path(self, disk_id: str, volume_id: str) -> str:
        if self.block:
            return f"/dev/{self.id}/{volume_id}"
        return f"{self.mount_dir}/images/{disk_id}/{volume_id}"


def disk_volumes(connection, disk_id: str) -> dict[str, Volume]:
    """volume id -> Volume for every volume of the disk the engine lists (its snapshots' images)."""
    service = connection.system_service().disks_service().disk_service(disk_id).disk_snapshots_service()
    try:
        listed = service.list()
    except sdk.Error as e:
        raise EngineError(f"The engine did not list the volumes of disk {disk_id}: {fault_text(e)}") from None
    return {
        s.id: Volume(
            id=s.id,
            parent_id=s.parent.id if s.parent else None,
            format=s.format.value if s.format else "",
            sparse=s.sparse is not False,
        )
        for s in listed
    }


def disk_allocation(connection, disk: types.Disk) -> tuple[str, bool]:
    """(format, sparse): what the disk is, "cow" or "raw", thin or preallocated, as it was created.

    The engine reports a disk's format and allocation as its active volume's, and every snapshot
    layer is a thin QCOW2 (ovirt-engine's CreateSnapshotCommand makes them so): a RAW or preallocated
    disk with a snapshot is reported as a thin QCOW2. What the disk is made of is its base volume. As
    only a base volume can be RAW or preallocated, the disk is RAW when any of its volumes is, and
    preallocated when any is; this needs no volume's parent (engines before 4.5 report none). An
    EngineError when the engine lists the volumes neither under the disk nor under its domain."""
    fmt, sparse = disk.format.value if disk.format else "cow", bool(disk.sparse)
    if fmt == "raw" or not sparse:
        return fmt, sparse  # the active volume is no snapshot layer: it is the base
    try:
        volumes = [(v.format, v.sparse) for v in disk_volumes(connection, disk.id).values()]
    except EngineError:
        # `disks/{id}/disksnapshots` came with API 4.4.3; a storage domain lists its disk snapshots
        # (each naming its disk) on every version.
        volumes = _domain_volumes(connection, disk)
    if any(f == "raw" for f, _ in volumes):
        fmt = "raw"
    return fmt, all(s for _, s in volumes)


def _domain_volumes(connection, disk: types.Disk) -> list[tuple[str, bool]]:
    """(format, sparse) of each volume of `disk` its storage domain lists as a disk snapshot."""
    if not disk.storage_domains:
        raise EngineError(f"The engine did not list the volumes of disk {disk.id}, nor its storage domain.")
    domain = connection.system_service().storage_domains_service().storage_domain_service(disk.storage_domains[0].id)
    try:
        listed = domain.disk_snapshots_service().list()
    except sdk.Error as e:
        raise EngineError(f"The engine did not list the volumes of disk {disk.id}: {fault_text(e)}") from None
    return [
        (s.format.value if s.format else "", s.sparse is not False)
        for s in listed
        if s.disk is not None and s.disk.id == disk.id
    ]


def volume_chain(volumes: dict[str, Volume], top: str, *, above: str | None = None, disk: str = "") -> list[Volume]:
    """The volumes from the disk's base (or from just above volume `above`) up to `top`, base first.

    An EngineError when the chain is broken: a parent the engine does not list, or `above` not in
    the chain under `top` (the layers since it cannot be told apart then)."""
    chain, current, seen = [], top, set()
    while current is not None and current != above:
        volume = volumes.get(current)
        if volume is None or current in seen:
            raise EngineError(
                f"The engine's volume chain of disk {disk or '?'} is broken at volume {current}: it is not among "
                "the disk's snapshots."
            )
        seen.add(current)
        chain.append(volume)
        current = volume.parent_id
    if above is not None and current != above:
        raise EngineError(f"Volume {above} of disk {disk or '?'} is not under volume {top} in its chain.")
    return list(reversed(chain))


def mount_dir_name(address: str, path: str) -> str:
    """vdsm's mount point name of a remote path: `ADDRESS:PATH` with `_` doubled, then `/` made `_`."""
    return f"{address}:{path.replace('_', '__').replace('/', '_')}"


def domain_location(connection, sd_id: str) -> DomainLocation:
    """Where a host finds this storage domain's volumes, from its storage connection."""
    try:
        sd = connection.system_service().storage_domains_service().storage_domain_service(sd_id).get()
    except sdk.Error as e:
        raise EngineError(f"The engine did not describe storage domain {sd_id}: {fault_text(e)}") from None
    storage = sd.storage
    if storage is None or storage.type is None:
        raise EngineError(f"Storage domain {sd.name} has no storage connection the engine reports.")
    if storage.type in BLOCK_TYPES:
        return DomainLocation(id=sd.id, name=sd.name, block=True)
    if not storage.path:
        raise EngineError(f"Storage domain {sd.name} ({storage.type.value}) reports no path of its storage.")
    if storage.type == types.StorageType.GLUSTERFS:
        path = storage.path if storage.path.startswith("/") else f"/{storage.path}"
        return DomainLocation(
            id=sd.id,
            name=sd.name,
            block=False,
            mount_dir=f"{MOUNT_ROOT}/glusterSD/{mount_dir_name(storage.address, path)}/{sd.id}",
        )
    if storage.type == types.StorageType.LOCALFS or not storage.address:
        # A local directory or device: vdsm links it as the path alone, `/` made `_`.
        name = mount_dir_name("", storage.path)[1:]
        return DomainLocation(id=sd.id, name=sd.name, block=False, mount_dir=f"{MOUNT_ROOT}/{name}/{sd.id}")
    return DomainLocation(
        id=sd.id,
        name=sd.name,
        block=False,
        mount_dir=f"{MOUNT_ROOT}/{mount_dir_name(storage.address, storage.path)}/{sd.id}",
    )
