"""Disks: created and awaited, removed."""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text
from ovirt.polling import retry_engine, wait_for


def add_disk(connection, spec: types.Disk, *, job=None) -> types.Disk:
    """Create a disk and wait until the engine says it is OK; it is recorded on the job at once."""
    disks = connection.system_service().disks_service()
    try:
        disk = disks.add(spec)
    except sdk.Error as e:
        raise EngineError(f"The engine refused to create disk {spec.name}: {fault_text(e)}") from None
    if job is not None:
        job.remember_engine_object("disk", disk.id, name=spec.name)
    service = disks.disk_service(disk.id)

    def ready():
        current = service.get()
        if current.status == types.DiskStatus.ILLEGAL:
            raise EngineError(f"The engine could not create disk {spec.name}.")
        return current if current.status == types.DiskStatus.OK else None

    return wait_for(ready, what=f"disk {spec.name} to be created", job=job)


def remove_disk(connection, disk_id: str, *, name: str = "", job=None) -> None:
    """Remove a disk, waiting out a brief lock; gone already is fine. Its record on the job goes
    only once it is gone; a removal that fails raises EngineError in words and keeps the record."""
    service = connection.system_service().disks_service().disk_service(disk_id)
    try:
        retry_engine(service.remove, what="Removing the disk", job=job)
    except sdk.NotFoundError:
        pass
    except sdk.Error as e:
        what = f"disk {name} ({disk_id})" if name else f"disk {disk_id}"
        raise EngineError(f"Removing {what} failed: {fault_text(e).rstrip('.')}.") from None
    if job is not None:
        job.forget_engine_object(disk_id)
