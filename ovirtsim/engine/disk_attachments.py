"""A VM's disk attachments: attach an existing or new disk, or another VM's disk snapshot (a backup
appliance's way); update, detach. And the block devices the guest of a VM running here sees for
them (see ovirtsim/guest_devices.py).

The checks and their wording follow ovirt-engine's AttachDiskToVmCommand, DetachDiskFromVmCommand
and DiskVmElementValidator, in their order; the messages are AppErrors' with ${action} ${type}
filled in as the engine fills them ("attach", "Virtual Disk").
"""

import logging
import shutil

from ovirtsim import guest_devices, lvm, qemu
from ovirtsim.engine.core import EngineCore, snapshot_disk_name
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found

log = logging.getLogger("ovirtsim")

# LocalizedVmStatus: how a refusal names the VM's status.
VM_STATUS_NAMES = {
    "up": "Up",
    "down": "Down",
    "paused": "Paused",
    "powering_up": "Powering Up",
    "powering_down": "Powering Down",
}
# The engine's audit log (AuditLogType).
USER_ATTACH_DISK_TO_VM = 2016
USER_DETACH_DISK_FROM_VM = 2018


class DiskAttachments(EngineCore):
    @staticmethod
    def vm_attachments(vm: dict) -> list[dict]:
        """Every attachment of the VM, its own disks first, then other VMs' disk snapshots."""
        return [*vm["disk_attachments"], *vm.get("snapshot_attachments", [])]

    def add_attachment(self, vm_id: str, spec) -> dict:
        if spec.disk is None:
            raise bad_request("disk_attachment.disk is required")
        if spec.disk.snapshot is not None:
            return self._attach_disk_snapshot(vm_id, spec)
        interface = spec.interface.value if spec.interface else "virtio_scsi"
        if not spec.disk.id and spec.disk.provisioned_size:
            with self.store.lock:
                vm = self.get("vms", vm_id)
                self._check_interface(vm, interface, "add")
            disk = self.add_disk(spec.disk)
            # AddDisk plugs a new disk unless told not to (plugDiskToVm).
            active = True if spec.active is None else bool(spec.active)
        else:
            with self.store.lock:
                vm = self.get("vms", vm_id)
                disk = self._disk_to_attach(spec.disk.id)
                self._check_vm_status(vm, "attach")
                if any(a["disk_id"] == disk["id"] for a in self.vm_attachments(vm)):
                    raise conflict("Cannot attach Virtual Disk. The disk is already attached to VM.")
                owner = self.vm_of_disk(disk["id"])
                if owner is not None and not disk["shareable"]:
                    raise conflict(
                        "Cannot attach Virtual Disk. The disk is not shareable and is already attached to a VM."
                    )
                self._check_interface(vm, interface, "attach")
            # The API plugs an existing disk only when asked: `active` is false when left out.
            active = bool(spec.active)
        with self.store.lock:
            vm = self.get("vms", vm_id)
            attachment = {
                "disk_id": disk["id"],
                "interface": interface,
                "bootable": bool(spec.bootable),
                "active": active,
                "pass_discard": bool(spec.pass_discard),
                "read_only": bool(spec.read_only),
            }
            vm["disk_attachments"].append(attachment)
            self.event(
                f"Disk {disk['name']} was successfully attached to VM {vm['name']} by admin@internal-authz.",
                code=USER_ATTACH_DISK_TO_VM,
                vm_id=vm_id,
            )
            self.store.save()
        self._hotplug(disk["id"])
        self._sync_devices_or_refuse(vm_id)
        return attachment

    def _disk_to_attach(self, disk_id: str | None) -> dict:
        """The disk, checked as AttachDiskToVm checks it first."""
        disk = self.store["disks"].get(disk_id or "")
        if disk is None:
            raise bad_request("Cannot attach Virtual Disk. The specified disk does not exist.")
        if disk["status"] == "illegal":
            raise bad_request(
                "Cannot attach Virtual Disk. Disk is in an illegal state. "
                "Disks in an illegal state can only be deleted."
            )
        if disk["status"] == "locked":
            raise conflict(
                f"Cannot attach Virtual Disk: The following disks are locked: {disk['name']}. "
                "Please try again in a few minutes."
            )
        return disk

    @staticmethod
    def _check_vm_status(vm: dict, action: str) -> None:
        allowed = ("up", "paused", "down") if action == "attach" else ("up", "down")
        if vm["status"] not in allowed:
            status = VM_STATUS_NAMES.get(vm["status"], vm["status"])
            raise conflict(f"Cannot {action} Virtual Disk because the VM is in {status} status.")

    @staticmethod
    def _check_interface(vm: dict, interface: str, action: str) -> None:
        # DiskVmElementValidator.isVirtIoScsiValid: a VirtIO-SCSI disk needs the VM's VirtIO-SCSI
        # controller (the VM's virtio_scsi.enabled).
        if interface == "virtio_scsi" and not vm.get("virtio_scsi", True):
            raise conflict(f"Cannot {action} Virtual Disk. VirtIO-SCSI is disabled for the VM")

    def _attach_disk_snapshot(self, vm_id: str, spec) -> dict:
        """Attach another VM's disk snapshot (AttachDiskToVm with a snapshot id): the disk as it was in
        that VM snapshot, for a backup appliance to read. Nothing is copied; the VM's qemu opens
        the chain up to the snapshot's volume read-only (writable attachments write to a transient
        overlay, as vdsm's)."""
        if not spec.disk.snapshot.id:
            raise EngineFault(400, "Disk [snapshot.id] required for add", reason="Incomplete parameters")
        interface = spec.interface.value if spec.interface else "virtio_scsi"
        with self.store.lock:
            snap = self.store["snapshots"].get(spec.disk.snapshot.id)
            disk = self.store["disks"].get(spec.disk.id or "")
            # DiskHandler.loadDiskFromSnapshot: the disk's image in that VM snapshot, or none at all.
            in_snapshot = (
                snap is not None
                and disk is not None
                and (
                    disk["id"] in snap["volumes"]
                    if snap["type"] == "regular"
                    else any(a["disk_id"] == disk["id"] for a in self.store["vms"][snap["vm_id"]]["disk_attachments"])
                )
            )
            if not in_snapshot:
                raise bad_request("Cannot attach Virtual Disk. The specified disk does not exist.")
            if snap["type"] != "regular":
                raise conflict("Cannot attach Virtual Disk. The operation is only allowed for regular snapshots.")
            if snap["status"] != "ok":
                raise conflict(f"Cannot attach Virtual Disk. The snapshot is in {snap['status'].upper()} status.")
            self._disk_to_attach(disk["id"])
            vm = self.get("vms", vm_id)
            self._check_vm_status(vm, "attach")
            if any(a["disk_id"] == disk["id"] for a in self.vm_attachments(vm)):
                raise conflict("Cannot attach Virtual Disk. The disk is already attached to VM.")
            self._check_interface(vm, interface, "attach")
            attachment = {
                "disk_id": disk["id"],
                "snapshot_id": snap["id"],
                "volume_id": snap["volumes"][disk["id"]],
                "interface": interface,
                "bootable": bool(spec.bootable),
                "active": bool(spec.active),
                "pass_discard": bool(spec.pass_discard),
                "read_only": bool(spec.read_only),
            }
            vm.setdefault("snapshot_attachments", []).append(attachment)
            self.event(
                f"Disk {disk['name']} was successfully attached to VM {vm['name']} by admin@internal-authz.",
                code=USER_ATTACH_DISK_TO_VM,
                vm_id=vm_id,
            )
            self.store.save()
        if attachment["active"]:
            self._plug_disk_snapshot(vm_id, attachment)
        self._sync_devices_or_refuse(vm_id)
        return attachment

    def _plug_disk_snapshot(self, vm_id: str, attachment: dict) -> None:
        """Hot-plug a disk-snapshot attachment into the VM's running qemu (nothing when it is down)."""
        with self.store.lock:
            vm = self.store["vms"][vm_id]
            vm_qemu = self.vm_qemus.get(vm_id)
            if vm_qemu is None or not vm_qemu.running or vm["status"] == "down":
                return
            if vm_qemu.has_disk(self._qemu_name(attachment)):
                return  # plugged already (its transient overlay, if any, is in use)
            disk = self.store["disks"][attachment["disk_id"]]
        try:
            if self.on_lvm(disk):
                self.sync_vm_activation(vm_id)  # the chain's LVs, active on the VM's host
            with self.store.lock:
                chain = self.snapshot_chain(vm, attachment)
            vm_qemu.hotplug(chain, exist_ok=True)
        except (qemu.QemuError, lvm.LvmError) as e:
            raise conflict(f"Cannot activate Virtual Disk. Failed to hot plug the disk: {e}") from None

    def _unplug(self, vm_id: str, attachment: dict, action: str) -> None:
        """Hot-unplug an attachment from the VM's running qemu: the guest's device goes first."""
        name = self._qemu_name(attachment)
        vm_qemu = self.vm_qemus.get(vm_id)
        self.release_guest_device(vm_id, name)
        if vm_qemu is not None and vm_qemu.running and vm_qemu.has_disk(name):
            try:
                vm_qemu.unplug(name)
            except qemu.QemuError as e:
                raise conflict(f"Cannot {action} Virtual Disk. Failed to hot unplug the disk: {e}") from None
        if "snapshot_id" in attachment:
            overlay = guest_devices.transient_dir(self.dir, vm_id) / f"{name}.qcow2"
            overlay.unlink(missing_ok=True)  # a transient disk's writes go with it

    @staticmethod
    def _qemu_name(attachment: dict) -> str:
        """The name of the attachment's disk in the VM's qemu."""
        disk_id = attachment["disk_id"]
        return snapshot_disk_name(disk_id) if "snapshot_id" in attachment else disk_id

    def _hotplug(self, disk_id: str) -> None:
        try:
            self.plug_if_running(disk_id)
        except qemu.QemuError as e:
            raise conflict(f"Cannot activate Virtual Disk. Failed to hot plug the disk: {e}") from None

    def get_attachment(self, vm_id: str, disk_id: str) -> dict:
        vm = self.get("vms", vm_id)
        for a in self.vm_attachments(vm):
            if a["disk_id"] == disk_id:
                return a
        raise not_found("diskattachments", disk_id)

    def update_attachment(self, vm_id: str, disk_id: str, spec) -> dict:
        if spec.disk is not None:
            # The engine edits the disk itself through its attachment (UpdateDisk, as the UI's Edit Disk).
            attached = self.get_attachment(vm_id, disk_id)
            if "snapshot_id" not in attached:
                self.update_disk(disk_id, spec.disk, vm_id=vm_id)
            elif spec.disk.provisioned_size not in (None, self.store["disks"][disk_id]["provisioned_size"]):
                raise conflict("Cannot edit Virtual Disk. Disk snapshot cannot be resized.")
        with self.store.lock:
            attachment = self.get_attachment(vm_id, disk_id)
            vm = self.store["vms"][vm_id]
            running = vm["status"] != "down"
            if spec.active is not None and not spec.active and attachment["active"] and running:
                self._unplug(vm_id, attachment, "deactivate")
            if spec.active is not None:
                attachment["active"] = bool(spec.active)
            if spec.bootable is not None:
                attachment["bootable"] = bool(spec.bootable)
            if spec.interface is not None:
                attachment["interface"] = spec.interface.value
            self.store.save()
        if attachment["active"]:
            if "snapshot_id" in attachment:
                self._plug_disk_snapshot(vm_id, attachment)
            else:
                self._hotplug(disk_id)
        elif spec.active is not None and running:
            self.sync_vm_activation(vm_id)  # unplugged: the VM no longer holds the disk's LVs
        self._sync_devices_or_refuse(vm_id)
        return attachment

    def remove_attachment(self, vm_id: str, disk_id: str, *, detach_only: bool = True) -> None:
        if not detach_only:
            # detach_only=false is a removal of the disk itself (RemoveDisk), attached or not.
            self.get_attachment(vm_id, disk_id)
            self.remove_disk(disk_id)
            return
        with self.store.lock:
            vm = self.get("vms", vm_id)
            attachment = self.get_attachment(vm_id, disk_id)
            self._check_vm_status(vm, "detach")
            disk = self.store["disks"][disk_id]
            snapshot = "snapshot_id" in attachment
            if not snapshot:
                if disk["status"] == "locked":
                    raise conflict(
                        f"Cannot detach Virtual Disk. Disk {disk['name']} is locked. Please try again later."
                    )
                if len(disk["volumes"]) > 1:
                    # The disk is in the VM's snapshots (an attached disk snapshot is not: it belongs
                    # to another VM's).
                    raise conflict(
                        "Cannot detach Virtual Disk. The disk is already configured in a snapshot. "
                        "In order to detach it, remove the disk's snapshots."
                    )
            # As the engine's DetachDiskFromVm: a disk plugged into a running VM is hot-unplugged.
            if attachment["active"] and vm["status"] != "down":
                self._unplug(vm_id, attachment, "detach")
            (vm["snapshot_attachments"] if snapshot else vm["disk_attachments"]).remove(attachment)
            self.event(
                f"Disk {disk['name']} was successfully detached from VM {vm['name']} by admin@internal-authz.",
                code=USER_DETACH_DISK_FROM_VM,
                vm_id=vm_id,
            )
            self.store.save()
        if vm["status"] != "down":
            self.sync_vm_activation(vm_id)

    # ----- disk snapshots attached to other VMs ----------------------------------------

    def snapshots_attached_elsewhere(self, vm: dict) -> list[str]:
        """What DiskImagesValidator.diskImagesSnapshotsNotAttachedToOtherVms lists for a VM: each of its
        (not shareable) disks' snapshots attached to another VM, as "alias ,snapshot, VM"."""
        info = []
        for own in vm["disk_attachments"]:
            disk = self.store["disks"].get(own["disk_id"])
            if disk is None or disk["shareable"]:
                continue
            for other in self.store["vms"].values():
                for a in other.get("snapshot_attachments", []):
                    if a["disk_id"] == disk["id"]:
                        snap = self.store["snapshots"].get(a["snapshot_id"], {})
                        info.append(f"{disk['name']} ,{snap.get('description', '')}, {other['name']}")
        return info

    def check_no_snapshots_attached_elsewhere(self, vm: dict, action: str) -> None:
        """Refuse an action on a VM (remove Snapshot, remove VM) while a snapshot of one of its disks is
        attached to another VM, with the engine's ACTION_TYPE_FAILED_VM_DISK_SNAPSHOT_IS_ATTACHED_TO_ANOTHER_VM."""
        info = self.snapshots_attached_elsewhere(vm)
        if info:
            # The engine joins the entries with a literal "%n" (StringUtils.join(list, "%n"), never
            # formatted afterwards): kept, so a client parsing it sees what the engine sends.
            raise conflict(
                f"Cannot {action}. The following VM's disks snapshots are attached to other VMs "
                "(Disk Alias/Snapshot Description/VM attached to):\n\n "
                f"{'%n'.join(info)} \n\nPlease detach them from those VMs and try again."
            )

    # ----- the block devices of VMs running here (backup proxies) -----------------------

    def set_runs_here(self, vm_id: str, runs_here: bool) -> str:
        """Mark a VM as running on this machine (a backup proxy): its guest's block devices are made
        real (guest_devices.py). Returns its /dev/disk/by-id directory."""
        with self.store.lock:
            vm = self.get("vms", vm_id)
            vm["runs_here"] = bool(runs_here)
            self.store.save()
            name = vm["name"]
        directory = guest_devices.by_id_dir(self.dir, vm_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.sync_guest_devices(vm_id)
        self.publish_proxy_device_dirs(changed={name: str(directory) if runs_here else None})
        return str(directory)

    def proxy_device_dirs(self) -> dict[str, str]:
        """{VM name: its /dev/disk/by-id directory} for the VMs running here."""
        with self.store.lock:
            vms = [vm for vm in self.store["vms"].values() if vm.get("runs_here")]
        result = {}
        for vm in vms:
            directory = guest_devices.by_id_dir(self.dir, vm["id"])
            directory.mkdir(parents=True, exist_ok=True)
            result[vm["name"]] = str(directory)
        return result

    def publish_proxy_device_dirs(self, changed: dict[str, str | None]) -> None:
        """Keep engine.json's proxy_device_dirs in step when a VM is marked (or unmarked) at run time."""
        import json
        import os

        info_file = self.dir / "engine.json"
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            return  # not started through the service (or not ready yet): it writes the file itself
        dirs = info.get("proxy_device_dirs", {})
        for name, directory in changed.items():
            if directory is None:
                dirs.pop(name, None)
            else:
                dirs[name] = directory
        info["proxy_device_dirs"] = dirs
        tmp = info_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2)
        os.replace(tmp, info_file)

    def _sync_devices_or_refuse(self, vm_id: str) -> None:
        try:
            self.sync_guest_devices(vm_id)
        except (qemu.QemuError, guest_devices.DeviceError) as e:
            raise conflict(f"Cannot activate Virtual Disk. Failed to hot plug the disk: {e}") from None

    def sync_guest_devices(self, vm_id: str) -> None:
        """Make the guest's devices match its plugged disks: a FUSE export of each from the VM's qemu,
        a loop device over it, the /dev/disk/by-id link to it. Only for a VM running here."""
        with self.store.lock:
            vm = self.store["vms"].get(vm_id)
            vm_qemu = self.vm_qemus.get(vm_id)
            wanted: dict[str, dict] = {}
            if vm is not None and vm.get("runs_here") and vm["status"] != "down":
                for a in self.vm_attachments(vm):
                    if a["active"] and a["interface"] in ("virtio", "virtio_scsi"):
                        wanted[self._qemu_name(a)] = {
                            "link": guest_devices.link_name(a["disk_id"], a["interface"]),
                            "read_only": bool(a["read_only"]),
                        }
            have = self.guest_devices.setdefault(vm_id, {})
            for name in [n for n in have if n not in wanted or have[n]["read_only"] != wanted[n]["read_only"]]:
                self.release_guest_device(vm_id, name)
            if vm_qemu is None or not vm_qemu.running:
                return
            for name, want in wanted.items():
                device = have.get(name)
                if device is not None:
                    if device["link"] != want["link"]:  # the interface changed: the guest names it anew
                        (guest_devices.by_id_dir(self.dir, vm_id) / device["link"]).unlink(missing_ok=True)
                        guest_devices.publish_link(self.dir, vm_id, want["link"], device["loop"])
                        device["link"] = want["link"]
                    continue
                if vm_qemu.has_disk(name):  # a new disk still being created is plugged when it is ready
                    have[name] = self._make_guest_device(vm_id, vm_qemu, name, **want)

    def _make_guest_device(self, vm_id: str, vm_qemu, name: str, *, link: str, read_only: bool) -> dict:
        mountpoint = guest_devices.mountpoint(self.dir, vm_id, name)
        mountpoint.parent.mkdir(parents=True, exist_ok=True)
        mountpoint.touch()
        vm_qemu.export_fuse(name, mountpoint, writable=not read_only)
        try:
            loop = guest_devices.attach_loop(mountpoint, read_only=read_only)
        except guest_devices.DeviceError:
            vm_qemu.unexport_fuse(name)
            mountpoint.unlink(missing_ok=True)
            raise
        guest_devices.publish_link(self.dir, vm_id, link, loop)
        return {"loop": loop, "link": link, "read_only": read_only, "mountpoint": str(mountpoint)}

    def guest_device_resized(self, vm_id: str, name: str, size: int) -> None:
        """A plugged disk grew: its guest's device grows with it (a virtio disk's capacity change)."""
        with self.store.lock:
            device = self.guest_devices.get(vm_id, {}).get(name)
        if device is not None:
            guest_devices.refresh_loop(device["loop"], size)

    def release_guest_device(self, vm_id: str, name: str, *, crashed: bool = False) -> None:
        """Take one device away from the guest: its link, its loop device (written data flushed down to
        qemu first), the FUSE export."""
        with self.store.lock:
            device = self.guest_devices.get(vm_id, {}).pop(name, None)
            if device is None:
                return
            (guest_devices.by_id_dir(self.dir, vm_id) / device["link"]).unlink(missing_ok=True)
            guest_devices.detach_loop(device["loop"], flush=not device["read_only"] and not crashed)
            vm_qemu = self.vm_qemus.get(vm_id)
            if crashed or vm_qemu is None or not vm_qemu.running:
                guest_devices.unmount(device["mountpoint"])  # left dead by a qemu that is gone
            elif vm_qemu.has_disk(name):
                try:
                    vm_qemu.unexport_fuse(name)
                except qemu.QemuError:
                    log.exception("VM %s: removing the FUSE export of %s failed", vm_id, name)
            guest_devices.mountpoint(self.dir, vm_id, name).unlink(missing_ok=True)

    def release_guest_devices(self, vm_id: str, *, crashed: bool = False) -> None:
        """Every device of the guest goes (its VM stops, or its qemu died), and its transient disks."""
        with self.store.lock:
            for name in list(self.guest_devices.get(vm_id, {})):
                self.release_guest_device(vm_id, name, crashed=crashed)
            self.guest_devices.pop(vm_id, None)
        shutil.rmtree(guest_devices.transient_dir(self.dir, vm_id), ignore_errors=True)
