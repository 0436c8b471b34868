"""Importing a VM from an export storage domain (ImportVmCommand): a VM of the domain becomes a VM
of the engine, with new disks on a data domain holding the exported content. The domain, its share
and what it holds are export_domains.py's."""

import logging
import time

from ovirtsim import image_copy, lvm, ovf, qemu, volume_meta
from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.engine.export_domains import (
    IMPORT_DONE,
    IMPORT_FAILED,
    IMPORT_STARTED,
    random_mac,
)
from ovirtsim.errors import EngineFault, bad_request, conflict

log = logging.getLogger("ovirtsim")


class ExportImports(EngineCore):
    # ----- import ---------------------------------------------------------------------------

    def import_vm(self, sd_id: str, vm_id: str, action, *, collapse: bool) -> dict:
        """ImportVmCommand: a VM of the export domain becomes a VM of the engine with new disks in
        a data domain holding the exported content; returns the job."""
        if action.storage_domain is None or not (action.storage_domain.id or action.storage_domain.name):
            raise EngineFault(
                400, "Action [storageDomain.id|name] required for doImport", reason="Incomplete parameters"
            )
        clone = bool(action.clone)
        with self.store.lock:
            source = self.get("storagedomains", sd_id)
            if self.domain_status(source) != "active":
                raise conflict(
                    "Cannot import VM. The relevant Storage Domain's status is "
                    f"{self.domain_status(source).capitalize()}."
                )
            parsed = self.exported_vm(sd_id, vm_id)
            target = self.resolve("storagedomains", action.storage_domain)
            if action.cluster is not None and (action.cluster.id or action.cluster.name):
                cluster = self.resolve("clusters", action.cluster)
            else:
                cluster = self.find_by_name("clusters", parsed.cluster_name)
                if cluster is None:
                    raise bad_request("Cannot import VM. Cluster is not valid.")
            dc = self.store["datacenters"].get(cluster["dc_id"], {})
            if target.get("dc_id") != cluster["dc_id"]:
                # The engine looks the target up in the cluster's data center only.
                raise bad_request("Cannot import VM. Storage Domain doesn't exist.")
            if target["type"] != "data":
                raise bad_request("Cannot import VM. Storage Domain type is illegal.")
            # There is always one snapshot, the Active VM's (isCopyCollapseDisabledWithSnapshots...).
            has_snapshots = len(parsed.snapshots) > 1 or any(d.chain for d in parsed.disks)
            if clone and not collapse and has_snapshots:
                raise bad_request(f"Cannot import VM. The VM {parsed.name} has snapshots that must be collapsed.")
            name = (action.vm.name if action.vm is not None and action.vm.name else None) or parsed.name
            new_vm_id = new_id() if clone else parsed.id
            if not clone and parsed.id in self.store["vms"]:
                raise conflict(
                    "Import VM failed - VM ID already exists in the system. Please remove the VM "
                    f"({self.store['vms'][parsed.id]['name']}) from the system first"
                )
            if not clone:
                existing = [d.alias for d in parsed.disks if d.disk_id in self.store["disks"]]
                if existing:
                    raise conflict(
                        f"Cannot import VM. The following disks already exist: {', '.join(existing)}. "
                        "Please import as a clone."
                    )
            if any(v["name"] == name for v in self.store["vms"].values()):
                raise conflict(
                    "Import VM failed - VM Name already exists in the Data Center. Please rename the VM in the "
                    "Data Center first"
                )
            plan = self._import_plan(parsed, target, clone=clone, collapse=collapse)
            needed = sum(d["provisioned_size"] for d, _ in plan if not d["sparse"])
            available, _, _ = self.storage_usage(target)
            if needed > available:
                raise conflict(f"Cannot import VM. Low disk space on Storage Domain {target['name']}.")
            with self._remote_vm_guard:
                if self._remote_vm_locks.get(parsed.id) == "remove":
                    raise conflict(f"Cannot import VM. VM {parsed.name} is being removed from export domain.")
                self._remote_vm_locks[parsed.id] = "import"
            vm = self._new_vm_from_ovf(parsed, vm_id=new_vm_id, name=name, cluster=cluster)
            vm["status"] = "image_locked"  # ImportVmCommandBase: the new VM's dynamic status
            vm["nics"] = [
                {
                    "id": new_id() if clone else (n["id"] or new_id()),
                    "name": n["name"],
                    "interface": "virtio",
                    "mac": random_mac() if clone or not n["mac"] else n["mac"],
                }
                for n in parsed.nics
            ]
            for disk, source_disk in plan:
                self.store["disks"][disk["id"]] = disk
                vm["disk_attachments"].append(
                    {
                        "disk_id": disk["id"],
                        "interface": source_disk.interface,
                        "bootable": source_disk.bootable,
                        "active": source_disk.active,
                        "pass_discard": False,
                        "read_only": False,
                    }
                )
            job_id = self._job(f"Importing VM {name} to Cluster {cluster['name']}")
            job = self.store["jobs"][job_id]
            job["op"] = {
                "kind": "import",
                "vm_id": new_vm_id,
                "source_vm_id": parsed.id,
                "sd_id": source["id"],
                "disks": [[d["id"], s.disk_id] for d, s in plan],
                "snapshots": [] if (collapse or clone) else [vars(s) for s in parsed.snapshots],
            }
            self.event(
                f"Starting to import Vm {name} to Data Center {dc.get('name', '')}, Cluster {cluster['name']}",
                code=IMPORT_STARTED,
                vm_id=new_vm_id,
            )
            self.store.save()
        self._spawn(self._run_import, job_id)
        return job

    def _import_plan(self, parsed: ovf.OvfVm, target: dict, *, clone: bool, collapse: bool) -> list:
        """The engine's new disk record for each exported disk (status locked until copied), with
        the volumes it gets: the same chain (same ids unless cloned), or one collapsed volume."""
        from ovirtsim.engine.disks import disk_configuration_refused

        plan = []
        for source in parsed.disks:
            if not source.active:
                continue
            chain = [*source.chain, ovf.OvfVolume(source.volume_id, source.format, source.sparse, source.snapshot_id)]
            if collapse or len(chain) == 1:
                # The leaf's format and allocation (the image the VM runs on), as ImportVm copies it.
                volumes = [{"id": new_id() if clone else source.volume_id, "format": source.format}]
                sparse = source.sparse
            else:
                volumes = [{"id": v.volume_id, "format": v.format} for v in chain]
                sparse = chain[0].sparse
            refused = disk_configuration_refused(volumes[0]["format"], sparse, "none", block=target["block"])
            if refused:
                raise bad_request(f"Cannot import VM. {refused}")
            backup = source.backup if volumes[-1]["format"] == "cow" else "none"
            disk = {
                "id": new_id() if clone else source.disk_id,
                "name": source.alias,
                "description": source.description,
                "provisioned_size": source.provisioned_size,
                "format": volumes[-1]["format"],
                "sparse": sparse,
                "sd_id": target["id"],
                "status": "locked",
                "backup": backup,
                "content_type": "data",
                "shareable": False,
                "wipe_after_delete": False,
                "volumes": volumes,
                "created": now_iso(),
            }
            plan.append((disk, source))
        return plan

    def _run_import(self, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            op = self.store["jobs"][job_id]["op"]
            vm = self.store["vms"][op["vm_id"]]
            source_sd = self.store["storagedomains"][op["sd_id"]]
            cluster = self.store["clusters"][vm["cluster_id"]]
            dc = self.store["datacenters"].get(cluster["dc_id"], {})
        error = None
        try:
            parsed = ovf.parse_ovf(
                (self._vms_dir(source_sd) / op["source_vm_id"] / f"{op['source_vm_id']}.ovf").read_text()
            )
            sources = {d.disk_id: d for d in parsed.disks}
            for disk_id, source_id in op["disks"]:
                with self.store.lock:
                    disk = self.store["disks"][disk_id]
                self._import_disk(disk, source_sd, sources[source_id])
        except Exception as e:  # whatever went wrong, the new VM goes and the source is unlocked below
            if not isinstance(e, (qemu.QemuError, lvm.LvmError, OSError, ovf.OvfError)):
                log.exception("import of VM %s failed", vm["name"])
            error = e
        with self._remote_vm_guard:
            self._remote_vm_locks.pop(op["source_vm_id"], None)
        if error is not None:
            log.warning("import of VM %s failed: %s", vm["name"], error)
            self._discard_new_vm(vm["id"], [d for d, _ in op["disks"]])
            with self.store.lock:
                self.event(
                    f"Failed to import Vm {vm['name']} to Data Center {dc.get('name', '')}, Cluster {cluster['name']}",
                    severity="error",
                    code=IMPORT_FAILED,
                    vm_id=vm["id"],
                )
                self._end_job(job_id, False)
                self.store.save()
            return
        with self.store.lock:
            for spec in op["snapshots"]:
                self._add_imported_snapshot(vm, spec, [d for d, _ in op["disks"]])
            disks = [self.store["disks"][disk_id] for disk_id, _ in op["disks"]]
            for disk in disks:
                for volume in disk["volumes"]:
                    volume.pop("snapshot_id", None)  # only needed to record the snapshots above
                self.refresh_disk_format(disk)
            self.store.save()
        # The volumes' metadata is written before the import is done: a client that sees the VM down
        # and its disks OK reads a storage domain as vdsm left it, never half-described.
        for disk in disks:
            volume_meta.write_disk_meta(self, disk)
            self.sync_block_metadata(disk)
        with self.store.lock:
            for disk in disks:
                disk["status"] = "ok"
            vm["status"] = "down"
            self.event(
                f"Vm {vm['name']} was imported successfully to Data Center {dc.get('name', '')}, "
                f"Cluster {cluster['name']}",
                code=IMPORT_DONE,
                vm_id=vm["id"],
            )
            self._end_job(job_id, True)
            self.store.save()

    def _add_imported_snapshot(self, vm: dict, spec: dict, disk_ids: list[str]) -> None:
        """The OVF's snapshots, as the engine records them on an import that keeps them."""
        if spec["type"] == "ACTIVE":
            return
        volumes = {}
        for disk_id in disk_ids:
            disk = self.store["disks"][disk_id]
            for v in disk["volumes"][:-1]:
                if v.get("snapshot_id") == spec["id"]:
                    volumes[disk_id] = v["id"]
        self.store["snapshots"][spec["id"]] = {
            "id": spec["id"],
            "vm_id": vm["id"],
            "description": spec["description"],
            "type": "regular",
            "status": "ok",
            "date": spec["creation_date"] or now_iso(),
            "persist_memorystate": False,
            "volumes": volumes,
            "ovf": None,
        }

    def _import_disk(self, disk: dict, source_sd: dict, source: ovf.OvfDisk) -> None:
        """The exported volumes into the new disk's volumes on the data domain (CopyImageGroup)."""
        src_dir = self._image_dir(source_sd, source.disk_id)
        leaf_src = src_dir / source.volume_id
        if not leaf_src.exists():
            raise OSError(f"the export domain has no volume {source.disk_id}/{source.volume_id}")
        chain = {v.volume_id: v for v in source.chain}
        with self.store.lock:
            volumes = disk["volumes"]
            for v in volumes:
                if v["id"] in chain:
                    v["snapshot_id"] = chain[v["id"]].snapshot_id
        block = self.on_lvm(disk)
        copied: list[dict] = []
        for index, volume in enumerate(volumes):
            parent = copied[-1] if copied else None
            if len(volumes) == 1:
                src = image_copy.source_args(leaf_src, source.format)
            else:
                src = image_copy.source_args(src_dir / volume["id"], volume["format"])
            if block:
                self._create_lv_volume(disk, volume, backing_id=parent["id"] if parent else None)
                with self.prepared(disk, [v["id"] for v in [*copied, volume]]) as host_id:
                    image_copy.copy_volume(
                        src,
                        self.volume_path(disk, volume["id"], host_id=host_id),
                        fmt=volume["format"],
                        parent=self.volume_path(disk, parent["id"], host_id=host_id) if parent else None,
                        parent_fmt=parent["format"] if parent else None,
                        existing=True,
                        size=disk["provisioned_size"],
                    )
            else:
                dest = self.volume_path(disk, volume["id"])
                image_copy.copy_volume(
                    src,
                    dest,
                    fmt=volume["format"],
                    preallocate=not disk["sparse"] and index == 0,
                    parent=self.volume_path(disk, parent["id"]) if parent else None,
                    parent_fmt=parent["format"] if parent else None,
                )
            copied.append(volume)
