"""Disks: add (a real volume made by qemu-img), remove, their volume chain."""

import datetime
import json
import shutil
import threading
import time
from pathlib import Path

from ovirtsim import lvm, qemu, volume_meta
from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found


def disk_configuration_refused(fmt: str, sparse: bool, backup: str, *, block: bool) -> str:
    """Why the engine refuses a new disk's format and allocation on a domain ("" when it accepts them),
    as ovirt-engine's ImagesHandler.checkImageConfiguration (4.4+): QCOW2 preallocated only for a disk
    with incremental backup, incremental backup only for QCOW2, RAW thin never on block storage (an LV
    has no holes). The fault is a 400, as its message is of type BAD_PARAMETERS."""
    cow, raw, incremental = fmt == "cow", fmt == "raw", backup == "incremental"
    if (cow and not sparse and not incremental) or (raw and incremental) or (block and raw and sparse):
        what = f"{fmt.upper()} {'Sparse' if sparse else 'Preallocated'} backup-{backup.capitalize()}"
        return f"Disk configuration ({what}) is incompatible with the storage domain type."
    return ""


class Disks(EngineCore):
    def add_disk(self, spec, *, wait: bool = False) -> dict:
        """Create a disk (status locked until its volume exists)."""
        if not spec.provisioned_size or spec.provisioned_size <= 0:
            raise bad_request(
                "Cannot add Virtual Disk. Disk size must be a positive number of bytes (provisioned_size)."
            )
        sds = spec.storage_domains or []
        if not sds:
            raise bad_request("Cannot add Virtual Disk. Storage Domain is required (storage_domains).")
        with self.store.lock:
            sd = self.resolve("storagedomains", sds[0])
            if sd["type"] != "data":
                raise conflict(f"Cannot add Virtual Disk. Storage Domain {sd['name']} is not a data domain.")
            fmt = spec.format.value if spec.format else "cow"
            sparse = True if spec.sparse is None else bool(spec.sparse)
            backup = spec.backup.value if spec.backup else "none"
            refused = disk_configuration_refused(fmt, sparse, backup, block=sd["block"])
            if refused:
                raise bad_request(f"Cannot add Virtual Disk. {refused}")
            available, _, _ = self.storage_usage(sd)
            if not sparse and spec.provisioned_size > available:
                raise conflict(f"Cannot add Virtual Disk. Low disk space on Storage Domain {sd['name']}.")
            disk_id = spec.id or new_id()
            if disk_id in self.store["disks"]:
                raise conflict(f"Cannot add Virtual Disk. A disk with id {disk_id} already exists.")
            alias = spec.alias or spec.name or f"disk_{disk_id[:8]}"
            disk = {
                "id": disk_id,
                "name": alias,
                "description": spec.description or "",
                "provisioned_size": spec.provisioned_size,
                "format": fmt,
                "sparse": sparse,
                "sd_id": sd["id"],
                "status": "locked",
                "backup": backup,
                "content_type": spec.content_type.value if spec.content_type else "data",
                "shareable": bool(spec.shareable),
                "wipe_after_delete": bool(spec.wipe_after_delete),
                "volumes": [{"id": new_id(), "format": fmt}],
                "created": now_iso(),
            }
            self.store["disks"][disk_id] = disk
            self.store.save()
        if wait:
            self._create_disk_volume(disk_id)
        else:
            self._spawn(self._create_disk_volume, disk_id)
        return disk

    def _create_disk_volume(self, disk_id: str) -> None:
        with self.store.lock:
            disk = self.store["disks"][disk_id]
            vol = disk["volumes"][0]
            path = self.volume_path(disk, vol["id"])
            preallocate = not disk["sparse"]
        time.sleep(self.async_delay)
        try:
            if self.on_lvm(disk):
                self._create_lv_volume(disk, vol)
            else:
                qemu.create(
                    path,
                    fmt="qcow2" if vol["format"] == "cow" else "raw",
                    size=disk["provisioned_size"],
                    preallocate=preallocate,
                )
                self.own_on_share(disk, path)
        except (qemu.QemuError, lvm.LvmError) as e:
            with self.store.lock:
                disk["status"] = "illegal"
                self.store.save()
            self.event(f"Failed to create disk {disk['name']}: {e}", severity="error")
            return
        volume_meta.write_disk_meta(self, disk)
        with self.store.lock:
            disk["status"] = "ok"
            self.store.save()
        self.plug_if_running(disk_id)

    def plug_if_running(self, disk_id: str) -> None:
        """A disk that became usable while attached (active) to a running VM is hot-plugged into its qemu
        (on a block domain its LVs are activated on the VM's host first)."""
        with self.store.lock:
            vm = self.vm_of_disk(disk_id)
            disk = self.store["disks"].get(disk_id)
            if vm is None or disk is None or disk["status"] != "ok" or vm["id"] not in self.vm_qemus:
                return
            if not any(a["disk_id"] == disk_id and a["active"] for a in vm["disk_attachments"]):
                return
            vm_qemu = self.vm_qemus[vm["id"]]
        if self.on_lvm(disk):
            try:
                self.sync_vm_activation(vm["id"])
            except lvm.LvmError as e:
                raise qemu.QemuError(str(e)) from None
        with self.store.lock:
            chain = self.disk_chain(disk)
        if vm_qemu.running:
            vm_qemu.hotplug(chain, exist_ok=True)
            self.sync_guest_devices(vm["id"])  # a VM running here: its guest sees the new device

    def remove_disk(self, disk_id: str) -> None:
        with self.store.lock:
            disk = self.get("disks", disk_id)
            if disk["status"] == "locked":
                raise conflict(f"Cannot remove Virtual Disk. Disk {disk['name']} is locked. Please try again later.")
            # Every VM using the disk, those it is attached to as a disk snapshot too (the engine's
            # getVmsListForDisk(id, includeVmsSnapshotAttachedTo=true)): none may have it plugged and run.
            using = [
                (vm, a)
                for vm in self.store["vms"].values()
                for a in [*vm["disk_attachments"], *vm.get("snapshot_attachments", [])]
                if a["disk_id"] == disk_id
            ]
            if any(vm["status"] != "down" and a["active"] for vm, a in using):
                raise conflict("Cannot remove Virtual Disk. At least one of the VMs is not down.")
            for vm, a in using:
                (vm["snapshot_attachments"] if "snapshot_id" in a else vm["disk_attachments"]).remove(a)
            for snap in self.store["snapshots"].values():
                snap["volumes"].pop(disk_id, None)
            del self.store["disks"][disk_id]
            sd = self.store["storagedomains"][disk["sd_id"]]
            self.store.save()
        if sd.get("lvm"):
            for volume in reversed(disk["volumes"]):
                self._remove_lv_volume(disk, volume)
        else:
            shutil.rmtree(Path(sd["path"]) / "images" / disk_id, ignore_errors=True)

    def update_disk(self, disk_id: str, spec, *, vm_id: str | None = None) -> dict:
        """Edit a disk (engine 4.5's UpdateDisk): alias, description, incremental backup, and extend.

        Extending runs as the engine's ExtendImageSize: the disk is locked, the active volume
        grows (`qemu-img resize` when nothing holds it, `block_resize` in the qemu of the VM
        running it), then it is `ok` again with event 371. Checkpoint bitmaps are left alone, as
        engine and vdsm do: qemu grows them with the image.
        """
        with self.store.lock:
            disk = self.get("disks", disk_id)
            vm = self.vm_of_disk(disk_id)
            if vm_id is not None and (vm is None or vm["id"] != vm_id):
                raise not_found("diskattachments", disk_id)
            if disk["status"] == "locked" or self.backup_of_disk(disk_id) is not None:
                raise conflict(
                    f"Cannot edit Virtual Disk: The following disks are locked: {disk['name']}. "
                    "Please try again in a few minutes."
                )
            new_size = spec.provisioned_size
            extend = new_size is not None and new_size != disk["provisioned_size"]
            if extend:
                self._validate_extend(disk, vm, new_size)
            backup = spec.backup.value if spec.backup else None
            # The engine checks the disk's (active volume's) format: a RAW disk with a snapshot is QCOW2.
            if backup == "incremental" and disk["volumes"][-1]["format"] != "cow":
                raise conflict("Cannot edit Virtual Disk. Incremental backup is not supported for RAW format disks.")
            if spec.alias or spec.name:
                disk["name"] = spec.alias or spec.name
            if spec.description is not None:
                disk["description"] = spec.description
            if backup is not None:
                disk["backup"] = backup
            if extend:
                disk["status"] = "locked"
            self.store.save()
            if vm is not None:
                self.event(
                    f"VM {vm['name']} {disk['name']} disk was updated by admin@internal-authz.", code=88, vm_id=vm["id"]
                )
            else:
                self.event(f"Disk {disk['name']} was updated by admin@internal-authz.", code=86)
        if extend:
            self._spawn(self._extend_disk, disk_id, new_size)
        return disk

    def _validate_extend(self, disk: dict, vm: dict | None, new_size: int) -> None:
        if new_size < disk["provisioned_size"]:
            raise conflict("Cannot edit Virtual Disk. New disk size must be larger than the current disk size.")
        if vm is not None:
            attachment = next(a for a in vm["disk_attachments"] if a["disk_id"] == disk["id"])
            if attachment["read_only"]:
                raise conflict("Cannot edit Virtual Disk. Read-only disk cannot be resized.")
            if vm["status"] not in ("up", "down"):
                raise conflict(f"Cannot edit Virtual Disk because the VM is in {vm['status']} status.")
        sd = self.store["storagedomains"][disk["sd_id"]]
        if sd.get("block"):
            # Said plainly rather than done half: growing an LV and its chain is not simulated.
            raise EngineFault(
                501, "Extending a disk on a block storage domain is not simulated yet.", reason="Not Implemented"
            )
        available, _, _ = self.storage_usage(sd)
        if not disk["sparse"] and new_size - disk["provisioned_size"] > available:
            raise conflict(f"Cannot edit Virtual Disk. Low disk space on Storage Domain {sd['name']}.")

    def _extend_disk(self, disk_id: str, new_size: int) -> None:
        # Sizes are whole sectors, as qemu rounds them.
        new_size = -(-new_size // 512) * 512
        time.sleep(self.async_delay)
        error = None
        with self._volume_locks[disk_id]:  # no merge or guest write changes the chain meanwhile
            with self.store.lock:
                disk = self.store["disks"].get(disk_id)
                if disk is None:
                    return
                top = disk["volumes"][-1]
                path = self.volume_path(disk, top["id"])
                fmt = "qcow2" if top["format"] == "cow" else "raw"
            try:
                vm_qemu = self.qemu_of_disk(disk_id)
                if vm_qemu is not None:
                    vm_qemu.resize(disk_id, new_size)
                    self.guest_device_resized(vm_qemu.vm_id, disk_id, new_size)
                else:
                    qemu.resize(path, fmt=fmt, size=new_size, preallocate=not disk["sparse"] and fmt == "raw")
            except qemu.QemuError as e:
                error = e
        with self.store.lock:
            size = new_size if error is None else disk["provisioned_size"]
            disk["provisioned_size"] = size
            disk["status"] = "ok"
            self.store.save()
            if error is not None:
                self.event(
                    f"Failed to extend size of the disk '{disk['name']}' to {new_size // 2**30} GB, "
                    f"User: admin@internal-authz. ({error})",
                    severity="error",
                    code=370,
                )
                return
            self.event(
                f"Size of the disk '{disk['name']}' was successfully updated to {size // 2**30} GB by "
                "admin@internal-authz.",
                code=371,
            )
        volume_meta.write_disk_meta(self, disk)

    def _unlock_disk(self, disk_id: str, status: str = "ok") -> None:
        disk = self.store["disks"].get(disk_id)
        if disk and disk["status"] == "locked":
            disk["status"] = status

    def refresh_disk_format(self, disk: dict) -> None:
        # The engine reports the format of the active volume: a RAW disk with a snapshot is QCOW2.
        disk["format"] = disk["volumes"][-1]["format"]

    # ----- volume chain ----------------------------------------------------------------

    def _merge_volume(self, disk: dict, index: int, *, removed: dict | None = None) -> None:
        """Merge volume `index` into its parent (index - 1); the parent takes the child's place. For a
        snapshot being `removed` (whose image of the disk is the parent), the merged volume is the
        child's snapshot's image from then on, no longer the removed one's: as the engine moves the
        image to the child's snapshot, a removal that fails or is cut short afterwards (a disk that
        failed, an engine restarted) leaves the snapshot without this disk, and removing it again
        merges only the disks it still has, never this one's next layer."""
        with self.store.lock:
            child = disk["volumes"][index]
            parent = disk["volumes"][index - 1]
            grandchild = disk["volumes"][index + 1] if index + 1 < len(disk["volumes"]) else None
            # qemu opens the whole chain below the volumes it merges: all of it active (block domains).
            needed = self.chain_up_to(disk, (grandchild or child)["id"])
            host_id = self.lv_host(disk) if self.on_lvm(disk) else None
        with self._volume_locks[disk["id"]], self.prepared(disk, needed, host_id=host_id):
            child_path = self.volume_path(disk, child["id"], host_id=host_id)
            parent_path = self.volume_path(disk, parent["id"], host_id=host_id)
            vm_qemu = self.qemu_of_disk(disk["id"])
            if vm_qemu is not None:
                # Live merge: the VM's qemu commits (and rewrites the backing reference above).
                vm_qemu.commit(disk["id"], child["id"], parent["id"])
            else:
                qemu.commit(child_path)
                if parent["format"] == "cow":
                    # As vdsm's cold merge, after the commit (which grew the parent to the child's size
                    # if the disk was extended since: bitmaps merge only at equal sizes): the
                    # checkpoints in the merged layer live on in its parent.
                    for bitmap in qemu.bitmaps(child_path):
                        if "in-use" not in bitmap["flags"]:
                            qemu.merge_bitmap(
                                parent_path, bitmap["name"], source=child_path, source_name=bitmap["name"]
                            )
                if grandchild is not None:
                    qemu.rebase_unsafe(self.volume_path(disk, grandchild["id"], host_id=host_id), parent_path)
            with self.store.lock:
                disk["volumes"].pop(index)
                for snap in self.store["snapshots"].values():
                    if snap["volumes"].get(disk["id"]) == child["id"]:
                        snap["volumes"][disk["id"]] = parent["id"]
                if removed is not None:
                    removed["volumes"].pop(disk["id"], None)
                self.store.save()
        if self.on_lvm(disk):
            self._remove_lv_volume(disk, child)
            self.sync_block_metadata(disk)
        else:
            child_path.unlink(missing_ok=True)
            volume_meta.write_disk_meta(self, disk)

    # ----- block domains: volumes as LVs -----------------------------------------------

    _metadata_lock = threading.Lock()

    def _create_lv_volume(self, disk: dict, volume: dict, *, backing_id: str | None = None) -> None:
        """A volume as vdsm makes one on a block domain: an LV tagged as initializing, its qcow2
        header written while active (RAW needs nothing), its metadata slot, then its real tags."""
        vg = disk["sd_id"]
        cow = volume["format"] == "cow"
        size = lvm.lv_size_for(disk["provisioned_size"], "qcow2" if cow else "raw")
        lv_size = self.lvm.create_lv(vg, volume["id"], size, tags=(lvm.TAG_UNINIT,))
        try:
            if cow:
                with self.store.lock:
                    chain = self.chain_up_to(disk, backing_id) if backing_id else []
                with self.prepared(disk, [*chain, volume["id"]]) as host_id:
                    qemu.create(
                        self.volume_path(disk, volume["id"], host_id=host_id),
                        fmt="qcow2",
                        size=disk["provisioned_size"],
                        backing=self.volume_path(disk, backing_id, host_id=host_id) if backing_id else None,
                    )
            with self._metadata_lock:
                slot = self.lvm.free_metadata_slot(vg)
                parent = backing_id or lvm.BLANK_UUID
                self.lvm.change_tags(
                    vg,
                    volume["id"],
                    delete=(lvm.TAG_UNINIT,),
                    add=(f"IU_{disk['id']}", f"PU_{parent}", f"MD_{slot}"),
                )
            volume.update(lv_size=lv_size, md_slot=slot, parent_tag=parent)
            volume["ctime"] = int(datetime.datetime.now(datetime.UTC).timestamp())
            self._write_block_metadata(disk, volume, backing_id, leaf=True)
        except BaseException:
            self.lvm.remove_lv(vg, volume["id"])
            raise

    def _remove_lv_volume(self, disk: dict, volume: dict) -> None:
        try:
            self.lvm.remove_lv(disk["sd_id"], volume["id"])
            if volume.get("md_slot") is not None:
                self.lvm.write_metadata(disk["sd_id"], volume["md_slot"], None)
        except lvm.LvmError as e:
            self.event(f"Failed to remove volume {volume['id']} of disk {disk['name']}: {e}", severity="warning")

    def _write_block_metadata(self, disk: dict, volume: dict, parent_id: str | None, *, leaf: bool) -> None:
        """vdsm's volume metadata (storage format V5) in the volume's slot of the metadata LV."""
        description = json.dumps({"DiskAlias": disk["name"], "DiskDescription": disk.get("description", "")})
        fields = {
            "CAP": disk["provisioned_size"],
            "CTIME": volume.get("ctime", 0),
            "DESCRIPTION": description if parent_id is None else "",
            "DISKTYPE": "DATA",
            "DOMAIN": disk["sd_id"],
            "FORMAT": "COW" if volume["format"] == "cow" else "RAW",
            "GEN": 0,
            "IMAGE": disk["id"],
            "LEGALITY": "ILLEGAL" if leaf and disk["status"] == "illegal" else "LEGAL",
            "PUUID": parent_id or lvm.BLANK_UUID,
            "TYPE": "SPARSE" if volume["format"] == "cow" else "PREALLOCATED",
            "VOLTYPE": "LEAF" if leaf else "INTERNAL",
        }
        self.lvm.write_metadata(disk["sd_id"], volume["md_slot"], fields)

    def sync_block_metadata(self, disk: dict) -> None:
        """Bring PU_ tags and metadata slots in step with the chain after it changed (snapshot, merge)."""
        with self.store.lock:
            if not self.on_lvm(disk) or disk["id"] not in self.store["disks"]:
                return
            volumes = [v for v in disk["volumes"] if v.get("md_slot") is not None]
        for index, volume in enumerate(volumes):
            parent = volumes[index - 1]["id"] if index else None
            if volume.get("parent_tag", lvm.BLANK_UUID) != (parent or lvm.BLANK_UUID):
                self.lvm.change_tags(
                    disk["sd_id"],
                    volume["id"],
                    delete=(f"PU_{volume.get('parent_tag', lvm.BLANK_UUID)}",),
                    add=(f"PU_{parent or lvm.BLANK_UUID}",),
                )
                volume["parent_tag"] = parent or lvm.BLANK_UUID
            self._write_block_metadata(disk, volume, parent, leaf=index == len(volumes) - 1)
        with self.store.lock:
            self.store.save()

    def set_lv_active_elsewhere(self, ident: str, host: str | None) -> list[str]:
        """Fault switch: the LVs of a disk (or one volume) are held active by another host (`host`, a
        name that is none of ours), so activating them anywhere here is refused as lvmlockd refuses
        it; None clears the fault. Returns the volume ids."""
        with self.store.lock:
            if ident in self.store["disks"]:
                disk = self.store["disks"][ident]
                volumes = [v["id"] for v in disk["volumes"]]
            else:
                disk, volume, _ = self.disk_snapshot(ident)
                volumes = [volume["id"]]
            if not self.on_lvm(disk):
                raise bad_request(f"disk {disk['name']} is not on a block storage domain")
        for volume_id in volumes:
            self.lvm.set_locked_elsewhere(disk["sd_id"], volume_id, host)
        return volumes
