"""Disk snapshots attached to a proxy VM, the disk attachment strategy's way of reading a VM's disks:
the engine hot-plugs the disk as it was in a snapshot into the proxy, whose guest sees a block device."""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text
from ovirt.leftovers import UndoContext, register_undo
from ovirt.polling import wait_for
from ovirt.vms import vm_service

# The record a job keeps of a disk snapshot it attached to a proxy (job.remember_engine_object).
DISK_ATTACHMENT = "disk_attachment"
INTERFACES = {"virtio": types.DiskInterface.VIRTIO, "virtio_scsi": types.DiskInterface.VIRTIO_SCSI}


def attach_disk_snapshot(connection, proxy_vm_id: str, *, disk_id: str, snapshot_id: str, interface: str) -> None:
    """Attach `disk_id` as it is in snapshot `snapshot_id` to the proxy VM, active and read-only."""
    try:
        vm_service(connection, proxy_vm_id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk_id, snapshot=types.Snapshot(id=snapshot_id)),
                interface=INTERFACES[interface],
                bootable=False,
                active=True,
                read_only=True,
            )
        )
    except sdk.Error as e:
        raise EngineError(
            f"The engine refused to attach disk {disk_id} (snapshot {snapshot_id}) to the proxy VM: {fault_text(e)}"
        ) from None


def attach_disk_writable(connection, proxy_vm_id: str, *, disk_id: str, interface: str) -> None:
    """Attach the (new) disk `disk_id` itself to the proxy VM, active and writable: a restore writes it
    there as a local block device."""
    try:
        vm_service(connection, proxy_vm_id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk_id),
                interface=INTERFACES[interface],
                bootable=False,
                active=True,
                read_only=False,
            )
        )
    except sdk.Error as e:
        raise EngineError(f"The engine refused to attach disk {disk_id} to the proxy VM: {fault_text(e)}") from None


def detach_disk_snapshot(connection, proxy_vm_id: str, disk_id: str, *, job=None) -> None:
    """Detach it from the proxy (a disk snapshot attachment is never deleted with its disk, nor a disk
    attached writable), and wait until the engine no longer lists it: only then may its snapshot be
    removed, or the disk be attached to another VM."""
    attachments = vm_service(connection, proxy_vm_id).disk_attachments_service()
    try:
        attachments.attachment_service(disk_id).remove(detach_only=True)
    except sdk.NotFoundError:
        return
    except sdk.Error as e:
        raise EngineError(f"The engine refused to detach disk {disk_id} from the proxy VM: {fault_text(e)}") from None
    wait_for(
        lambda: all(a.id != disk_id for a in attachments.list()),
        what=f"disk {disk_id} to be detached from the proxy VM",
        timeout=300,
        job=job,
        cancellable=False,
    )


def attached_disk_ids(connection, proxy_vm_id: str) -> set[str]:
    """The ids of every disk attached to the proxy VM now (its own and others' snapshots)."""
    return {a.id for a in vm_service(connection, proxy_vm_id).disk_attachments_service().list()}


def _undo_attachment(context: UndoContext, record: dict) -> str:
    detach_disk_snapshot(context.connection, record["proxy"], record["id"], job=context.job)
    return f"Detached disk {record.get('name') or record['id']} from the proxy VM, where this job had attached it"


def _describe_attachment(record: dict) -> str:
    name = record.get("name")
    return (
        f"disk {name} ({record['id']}) attached to proxy VM {record['proxy']}"
        if name
        else (f"disk {record['id']} attached to proxy VM {record['proxy']}")
    )


# Recorded newest, so undone first: the snapshot it came from can be removed only once it is detached.
register_undo(DISK_ATTACHMENT, _undo_attachment, describe=_describe_attachment)
