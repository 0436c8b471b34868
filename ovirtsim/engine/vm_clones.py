"""A new VM cloned from a snapshot of another (`POST /vms` with `snapshots`): AddVmFromSnapshot.

The engine reads the VM's configuration stored with the snapshot, makes a VM of it (the request's
name, cluster and other fields over it) with one new disk per disk of the snapshot, each a copy
of the snapshot's image collapsed into a single volume (CopyImageGroup with copy-collapse), in the
source disk's storage domain. The new VM is `image_locked` and its disks `locked` until the copies
end; meanwhile the snapshot is locked and so are the source disks (CopyImageGroup locks the image
group it copies). The engine answers 202 Accepted with the VM, `creation_status` pending.
"""

import logging
import time

from ovirtsim import image_copy, lvm, ovf, qemu, volume_meta
from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.engine.disks import disk_configuration_refused
from ovirtsim.engine.export_domains import random_mac
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found

log = logging.getLogger("ovirtsim")

# AuditLogType: AddVm's events when it has tasks (USER_ADD_VM_STARTED ... FINISHED_SUCCESS/FAILURE).
ADD_VM_STARTED, ADD_VM_DONE, ADD_VM_FAILED = 37, 53, 60
USER = "admin@internal-authz"


class VmClones(EngineCore):
    def clone_vm_from_snapshot(self, spec) -> dict:
        """Start the clone; returns the new VM (image_locked)."""
        if spec.cluster is None or not (spec.cluster.id or spec.cluster.name):
            raise EngineFault(400, "Vm [cluster.id|name] required for add", reason="Incomplete parameters")
        if not spec.name:
            raise EngineFault(400, "Vm [name] required for add", reason="Incomplete parameters")
        snapshot_id = spec.snapshots[0].id
        if not snapshot_id:
            raise EngineFault(400, "Snapshot [id] required for add", reason="Incomplete parameters")
        with self.store.lock:
            cluster = self.resolve("clusters", spec.cluster)
            snap = self.store["snapshots"].get(snapshot_id)
            if snap is None:
                raise not_found("snapshots", snapshot_id)  # GetVmConfigurationBySnapshot found nothing
            source_vm = self.store["vms"][snap["vm_id"]]
            if any(s["vm_id"] == source_vm["id"] and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(
                    "Cannot add VM. The VM is performing an operation on a Snapshot. Please wait for the "
                    "operation to finish, and try again."
                )
            if snap["type"] != "regular":
                raise conflict("Cannot add VM. The operation is only allowed for regular snapshots.")
            if not snap.get("ovf"):
                raise bad_request(
                    f"Cannot add VM. The snapshot {snap['description']} of VM {source_vm['name']} has no "
                    "configuration available. Please choose a snapshot with configuration available."
                )
            config = ovf.parse_ovf(snap["ovf"])
            self._check_vm_name(spec.name)
            sources = [self.store["disks"][d] for d in snap["volumes"] if d in self.store["disks"]]
            locked = [d["name"] for d in sources if d["status"] == "locked"]
            if locked:
                raise conflict(
                    f"Cannot add VM: The following disks are locked: {', '.join(locked)}. "
                    "Please try again in a few minutes."
                )
            illegal = [d["name"] for d in sources if d["status"] == "illegal"]
            if illegal:
                raise conflict(
                    f"Cannot add VM. The following attached disks are in ILLEGAL status: {', '.join(illegal)} "
                    "- please remove them and try again."
                )
            plan = self._clone_plan(spec.name, snap, sources, config)
            topology = spec.cpu.topology if spec.cpu and spec.cpu.topology else None
            vm = self._new_vm(
                vm_id=new_id(),
                name=spec.name,
                cluster=cluster,
                description=spec.description if spec.description is not None else config.description,
                memory=spec.memory or config.memory,
                sockets=(topology.sockets if topology else None) or config.sockets,
                cores=(topology.cores if topology else None) or config.cores,
                threads=(topology.threads if topology else None) or config.threads,
                os_type=(spec.os.type if spec.os else None) or config.os_type,
                guest_agent=source_vm.get("guest_agent", True),
            )
            vm["status"] = "image_locked"
            # New NICs with new MACs from the pool, as copyVmDevices and the MAC pool give them.
            vm["nics"] = [
                {"id": new_id(), "name": n["name"], "interface": "virtio", "mac": random_mac()} for n in config.nics
            ]
            for disk, attachment, _, _ in plan:
                self.store["disks"][disk["id"]] = disk
                vm["disk_attachments"].append(attachment)
            snap["status"] = "locked"
            for source in sources:
                source["status"] = "locked"
            job_id = self._job(
                f"Creating VM {vm['name']} from Snapshot {snap['description']} in Cluster {cluster['name']}"
            )
            self.store["jobs"][job_id]["op"] = {
                "kind": "clone",
                "vm_id": vm["id"],
                "snapshot_id": snap["id"],
                "disk_ids": [d["id"] for d, _, _, _ in plan],
                "sources": [[d["id"], src["id"], volume_id] for d, _, src, volume_id in plan],
            }
            self.event(f"VM {vm['name']} creation was initiated by {USER}.", code=ADD_VM_STARTED, vm_id=vm["id"])
            self.store.save()
        self._spawn(self._run_clone, job_id)
        return vm

    def _clone_plan(self, name: str, snap: dict, sources: list[dict], config: ovf.OvfVm) -> list:
        """(new disk, its attachment, source disk, snapshot volume) for each disk of the snapshot: the
        image's format and allocation as the snapshot has it, RAW thin made QCOW2 on block storage
        (adjustDisksImageConfiguration); the alias is the source's with the new VM's name appended."""
        configured = {d.disk_id: d for d in config.disks}
        plan = []
        for source in sources:
            volume_id = snap["volumes"][source["id"]]
            volume = next(v for v in source["volumes"] if v["id"] == volume_id)
            sd = self.store["storagedomains"][source["sd_id"]]
            fmt, sparse = volume["format"], self.volume_sparse(source, volume_id)
            if fmt == "raw" and sparse and sd["block"]:
                fmt = "cow"
            backup = source["backup"] if fmt == "cow" else "none"
            refused = disk_configuration_refused(fmt, sparse, backup, block=sd["block"])
            if refused:
                raise bad_request(f"Cannot add VM. {refused}")
            disk_id = new_id()
            disk = {
                "id": disk_id,
                "name": f"{source['name']}_{name}",
                "description": source["description"],
                "provisioned_size": source["provisioned_size"],
                "format": fmt,
                "sparse": sparse,
                "sd_id": source["sd_id"],
                "status": "locked",
                "backup": backup,
                "content_type": source["content_type"],
                "shareable": False,
                "wipe_after_delete": source["wipe_after_delete"],
                "volumes": [{"id": new_id(), "format": fmt}],
                "created": now_iso(),
            }
            seen = configured.get(source["id"])
            attachment = {
                "disk_id": disk_id,
                "interface": seen.interface if seen else "virtio_scsi",
                "bootable": seen.bootable if seen else False,
                "active": seen.active if seen else True,
                "pass_discard": False,
                "read_only": False,
            }
            plan.append((disk, attachment, source, volume_id))
        return plan

    def _run_clone(self, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            op = self.store["jobs"][job_id]["op"]
            vm = self.store["vms"][op["vm_id"]]
        error = None
        try:
            for disk_id, source_id, volume_id in op["sources"]:
                with self.store.lock:
                    disk = self.store["disks"][disk_id]
                    source = self.store["disks"][source_id]
                self._copy_snapshot_image(source, volume_id, disk)
        except Exception as e:  # whatever went wrong, the new VM goes and the source is unlocked below
            if not isinstance(e, (qemu.QemuError, lvm.LvmError, OSError)):
                log.exception("clone of VM %s failed", vm["name"])
            error = e
        with self.store.lock:
            snap = self.store["snapshots"].get(op["snapshot_id"])
            if snap is not None and snap["status"] == "locked":
                snap["status"] = "ok"
            for _, source_id, _ in op["sources"]:
                self._unlock_disk(source_id)
        if error is not None:
            log.warning("clone of VM %s from snapshot %s failed: %s", vm["name"], op["snapshot_id"], error)
            self._discard_new_vm(vm["id"], op["disk_ids"])
            with self.store.lock:
                self.event(
                    f"Failed to complete VM {vm['name']} creation.",
                    severity="error",
                    code=ADD_VM_FAILED,
                    vm_id=vm["id"],
                )
                self._end_job(job_id, False)
                self.store.save()
            return
        with self.store.lock:
            for disk_id in op["disk_ids"]:
                self.store["disks"][disk_id]["status"] = "ok"
            vm["status"] = "down"
            self.event(f"VM {vm['name']} creation has been completed.", code=ADD_VM_DONE, vm_id=vm["id"])
            self._end_job(job_id, True)
            self.store.save()

    def _copy_snapshot_image(self, source: dict, volume_id: str, disk: dict) -> None:
        """The source's chain up to the snapshot's volume, collapsed into the new disk's volume."""
        with self.store.lock:
            chain = self.chain_up_to(source, volume_id)
            volume = next(v for v in source["volumes"] if v["id"] == volume_id)
            new_volume = disk["volumes"][0]
        with self.prepared(source, chain) as host_id:
            src = image_copy.source_args(
                self.volume_path(source, volume_id, host_id=host_id),
                volume["format"],
                size=source["provisioned_size"] if self.on_lvm(source) else None,
            )
            if self.on_lvm(disk):
                self._create_lv_volume(disk, new_volume)
                with self.prepared(disk, [new_volume["id"]], host_id=host_id):
                    image_copy.copy_volume(
                        src,
                        self.volume_path(disk, new_volume["id"], host_id=host_id),
                        fmt=new_volume["format"],
                        existing=True,
                        size=disk["provisioned_size"],
                    )
            else:
                image_copy.copy_volume(
                    src,
                    self.volume_path(disk, new_volume["id"]),
                    fmt=new_volume["format"],
                    preallocate=not disk["sparse"],
                )
        volume_meta.write_disk_meta(self, disk)
