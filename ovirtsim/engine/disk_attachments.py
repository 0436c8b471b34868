"""A VM's disk attachments: attach an existing or new disk, update, detach."""

from ovirtsim import qemu
from ovirtsim.engine.core import EngineCore
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found


class DiskAttachments(EngineCore):
    def add_attachment(self, vm_id: str, spec) -> dict:
        if spec.disk is None:
            raise bad_request("disk_attachment.disk is required")
        if spec.disk.snapshot is not None and spec.disk.snapshot.id:
            # Say so plainly rather than answer as if the disk itself were being attached.
            raise EngineFault(
                501,
                "Attaching a disk snapshot to another VM (a backup appliance) is not simulated yet.",
                reason="Not Implemented",
            )
        if not spec.disk.id and spec.disk.provisioned_size:
            disk = self.add_disk(spec.disk)
        else:
            disk = self.get("disks", spec.disk.id)
        with self.store.lock:
            vm = self.get("vms", vm_id)
            owner = self.vm_of_disk(disk["id"])
            if owner is not None and not disk["shareable"]:
                raise conflict(
                    f"Cannot attach Virtual Disk. The disk {disk['name']} is already attached to VM {owner['name']}."
                )
            attachment = {
                "disk_id": disk["id"],
                "interface": spec.interface.value if spec.interface else "virtio_scsi",
                "bootable": bool(spec.bootable),
                "active": True if spec.active is None else bool(spec.active),
                "pass_discard": bool(spec.pass_discard),
                "read_only": bool(spec.read_only),
            }
            vm["disk_attachments"].append(attachment)
            self.store.save()
        self._hotplug(disk["id"])
        return attachment

    def _hotplug(self, disk_id: str) -> None:
        try:
            self.plug_if_running(disk_id)
        except qemu.QemuError as e:
            raise conflict(f"Cannot activate Virtual Disk. Failed to hot plug the disk: {e}") from None

    def get_attachment(self, vm_id: str, disk_id: str) -> dict:
        vm = self.get("vms", vm_id)
        for a in vm["disk_attachments"]:
            if a["disk_id"] == disk_id:
                return a
        raise not_found("diskattachments", disk_id)

    def update_attachment(self, vm_id: str, disk_id: str, spec) -> dict:
        if spec.disk is not None:
            # The engine edits the disk itself through its attachment (UpdateDisk, as the UI's Edit Disk).
            self.get_attachment(vm_id, disk_id)
            self.update_disk(disk_id, spec.disk, vm_id=vm_id)
        with self.store.lock:
            attachment = self.get_attachment(vm_id, disk_id)
            vm_qemu = self.vm_qemus.get(vm_id)
            if spec.active is not None and not spec.active and vm_qemu is not None and vm_qemu.has_disk(disk_id):
                try:
                    vm_qemu.unplug(disk_id)
                except qemu.QemuError as e:
                    raise conflict(f"Cannot deactivate Virtual Disk. Failed to hot unplug the disk: {e}") from None
            if spec.active is not None:
                attachment["active"] = bool(spec.active)
            if spec.bootable is not None:
                attachment["bootable"] = bool(spec.bootable)
            if spec.interface is not None:
                attachment["interface"] = spec.interface.value
            self.store.save()
        if attachment["active"]:
            self._hotplug(disk_id)
        elif spec.active is not None and self.store["vms"][vm_id]["status"] != "down":
            self.sync_vm_activation(vm_id)  # unplugged: the VM no longer holds the disk's LVs
        return attachment

    def remove_attachment(self, vm_id: str, disk_id: str, *, detach_only: bool = True) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            attachment = self.get_attachment(vm_id, disk_id)
            disk = self.store["disks"][disk_id]
            if disk["status"] == "locked":
                raise conflict(f"Cannot detach Virtual Disk. Disk {disk['name']} is locked. Please try again later.")
            if vm["status"] != "down" and attachment["active"]:
                raise conflict(
                    "Cannot detach Virtual Disk. The disk is plugged into a running VM; deactivate it first."
                )
            vm["disk_attachments"].remove(attachment)
            self.store.save()
        if not detach_only:
            self.remove_disk(disk_id)
        elif len(disk["volumes"]) > 1:
            self._collapse_chain(disk_id)
