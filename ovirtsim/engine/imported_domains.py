"""Importing an existing NFS data domain and registering the VMs it holds (engine 4.4+).

`POST /storagedomains` of an NFS data domain whose share already holds one is the engine's
AddExistingFileStorageDomain (the REST layer asks the host for the share's domains first); attaching
it to a data center writes POOL_UUID into its metadata and reads its newest OVF_STORE, whose VMs
become the domain's unregistered VMs; registering one (ImportVmFromConfiguration) makes a VM of
the engine whose disks' volumes ARE the files on the share, no copy. Detaching forgets the VMs and
disks of the domain (detachStorageDomainWithEntities); removing it with format=false forgets the
domain and leaves the share as it is. The share's layout is data_domain.py's.
"""

import logging
import time
from pathlib import Path

from ovirtsim import data_domain, ovf, qemu
from ovirtsim.engine.core import FINAL_PHASES, EngineCore, new_id, now_iso
from ovirtsim.engine.export_domains import (
    DOMAIN_ACTIVATED,
    DOMAIN_ADDED,
    USER,
    is_loopback,
    is_template_ovf,
    nfs_mount_problem,
    random_mac,
)
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found

log = logging.getLogger("ovirtsim")

# The engine's audit log types (AuditLogType).
REGISTERED, REGISTERED_WITHOUT_DISKS = 174, 175
DOMAIN_ATTACHED, DOMAIN_DETACHED, DOMAIN_DEACTIVATED = 962, 964, 968
OVF_STORE_UNREADABLE = 1017


def _status_refusal(action: str, status: str) -> EngineFault:
    return conflict(f"Cannot {action}. The relevant Storage Domain's status is {status.capitalize()}.")


class ImportedDomains(EngineCore):
    def _imported(self, sd: dict) -> bool:
        return sd["type"] == "data" and bool(sd.get("imported"))

    # ----- the domain -------------------------------------------------------------------

    def add_storage_domain(self, spec) -> dict:
        """POST /storagedomains: an NFS data domain is imported from its share; the rest as before."""
        if spec.type is None or spec.type.value != "data":
            return self.add_export_domain(spec)
        for field, present in (
            ("host.id|name", spec.host is not None and (spec.host.id or spec.host.name)),
            ("storage", spec.storage is not None),
        ):
            if not present:
                raise EngineFault(400, f"StorageDomain [{field}] required for add", reason="Incomplete parameters")
        storage_type = spec.storage.type.value if spec.storage.type else None
        if storage_type != "nfs":
            raise EngineFault(
                501,
                f"Importing a data domain on {storage_type} storage is not simulated (NFS only).",
                reason="Not Implemented",
            )
        for field in ("address", "path"):
            if not getattr(spec.storage, field):
                raise EngineFault(400, f"HostStorage [{field}] required for add", reason="Incomplete parameters")
        address, path = spec.storage.address, spec.storage.path.rstrip("/") or "/"
        options = spec.storage.mount_options or ""
        with self.store.lock:
            self.resolve("hosts", spec.host)
            # AddStorageServerConnection comes first: a connection the engine has is refused.
            for other in self.store["storagedomains"].values():
                if (other.get("address"), other.get("export_path")) == (address, path):
                    raise conflict(
                        f"Cannot add Storage Connection. Storage connection {other['id']} already exists for "
                        f"{other['name']}."
                    )
        # The host mounts it: only a share served from this machine can be (see export_domains).
        # In the hosts' storage network when there is one (storage_net.py): where they mount.
        problem = (
            "no route to the server"
            if not is_loopback(address)
            else nfs_mount_problem(address, path, options, self.storage_netns)
        )
        share = Path(path)
        if not problem and not share.is_dir():
            problem = "no such directory here"
        if problem:
            raise bad_request(
                f"Cannot add Storage Connection. Problem while trying to mount target {address}:{path}: {problem}."
            )
        found = data_domain.domains_on(share)
        with self.store.lock:
            known = set(self.store["storagedomains"])
            # GetExistingStorageDomainList: the share's data domains (vdsm lists by CLASS) the engine lacks.
            new = [
                (r, m) for r, m in found if isinstance(m, dict) and m["CLASS"] == "Data" and m["SDUUID"] not in known
            ]
            if not new:
                if any(isinstance(m, dict) and m["CLASS"] == "Data" for _, m in found):
                    raise conflict("Cannot add Storage. The Storage Domain already exists.")
                broken = [str(m) for _, m in found if isinstance(m, data_domain.DomainError)]
                what = "; ".join(broken) or ", ".join(f"{r.name} (CLASS={m['CLASS']})" for r, m in found) or "nothing"
                # The REST layer would then create a new domain there (AddNFSStorageDomain): not simulated.
                raise EngineFault(
                    501,
                    f"Creating a new data domain is not simulated: the share {address}:{path} holds no data domain "
                    f"to import (found: {what}).",
                    reason="Not Implemented",
                )
            root, metadata = new[0]
            name = spec.name or metadata.get("DESCRIPTION") or root.name
            if self.find_by_name("storagedomains", name) is not None:
                raise conflict("Cannot add Storage. The Storage Domain name is already in use.")
            sd = {
                "id": metadata["SDUUID"],
                "name": name,
                "description": spec.description or "",
                "type": "data",
                "storage_type": "nfs",
                "block": False,
                "dc_id": None,
                "status": None,
                "path": str(root),
                "master": False,
                "capacity": 256 * 1024**3,
                "export_path": path,
                "address": address,
                "mount_options": options or None,
                "vfs_type": None,
                "lvm": False,
                "imported": True,
                "unregistered": {},  # the OVF_STORE's VMs not yet registered: {vm id: OVF}
            }
            self.store["storagedomains"][sd["id"]] = sd
            self.event(f"Storage Domain {name} was added by {USER}", code=DOMAIN_ADDED)
            self.store.save()
            return sd

    def _write_pool(self, sd: dict) -> None:
        """vdsm's attach/detach: POOL_UUID of the domain's metadata (the rest kept, the seal anew)."""
        path = Path(sd["path"]) / "dom_md" / "metadata"
        fields = data_domain.read_metadata(path)
        fields["POOL_UUID"] = sd.get("dc_id") or ""
        data_domain.write_metadata(path, fields)

    def _read_ovf_stores(self, sd: dict) -> dict[str, str]:
        """The VMs of the domain's newest readable OVF_STORE (getEntitiesFromStorageOvfDisk)."""
        vms, stores = data_domain.newest_ovf_store_entities(Path(sd["path"]))
        if vms is None and stores:
            self.event(
                f"Failed to retrieve VMs and Templates from the OVF disk of Storage Domain {sd['name']}.",
                severity="warning",
                code=OVF_STORE_UNREADABLE,
            )
        return {vm_id: text for vm_id, text in (vms or {}).items() if not is_template_ovf(text)}

    def attach_storage_domain(self, dc_id: str, ref) -> dict:
        with self.store.lock:
            sd = self.resolve("storagedomains", ref)
            if not self._imported(sd):
                return super().attach_storage_domain(dc_id, ref)
            dc = self.get("datacenters", dc_id)
            if sd.get("dc_id"):
                raise _status_refusal("attach Storage", self.domain_status(sd))
            sd["dc_id"], sd["status"] = dc["id"], "active"
            self._write_pool(sd)
            self.event(
                f"Storage Domain {sd['name']} was attached to Data Center {dc['name']} by {USER}", code=DOMAIN_ATTACHED
            )
            known = self.store["vms"]
            sd["unregistered"] = {k: v for k, v in self._read_ovf_stores(sd).items() if k not in known}
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was activated by {USER}", code=DOMAIN_ACTIVATED
            )
            self.store.save()
            return sd

    def _attached_imported(self, dc_id: str, sd_id: str) -> tuple[dict, dict] | None:
        sd = self.store["storagedomains"].get(sd_id)
        if sd is None or not self._imported(sd):
            return None
        dc = self.get("datacenters", dc_id)
        if sd.get("dc_id") != dc["id"]:
            raise not_found("storagedomains", sd_id)
        return dc, sd

    def deactivate_storage_domain(self, dc_id: str, sd_id: str) -> None:
        with self.store.lock:
            found = self._attached_imported(dc_id, sd_id)
            if found is None:
                return super().deactivate_storage_domain(dc_id, sd_id)
            dc, sd = found
            if self.domain_status(sd) != "active":
                raise _status_refusal("deactivate Storage", self.domain_status(sd))
            if any(vm["status"] not in ("down", "suspended") for vm in self._vms_on(sd_id)):
                raise conflict(
                    'Cannot deactivate Storage. VMs in a state other than "Down" or "Suspended" were detected.\n'
                    "-Please ensure all VMs associated with this Storage Domain are stopped and in the Down or "
                    "Suspended state first."
                )
            if any(
                t["phase"] not in FINAL_PHASES and self.store["disks"].get(t["disk_id"], {}).get("sd_id") == sd_id
                for t in self.store["imagetransfers"].values()
            ):
                raise conflict(
                    "Cannot deactivate Storage. Please pause or cancel all active disk uploads and downloads first."
                )
            if any(
                j["status"] == "started" and j.get("op", {}).get("sd_id") == sd_id for j in self.store["jobs"].values()
            ):
                raise conflict(
                    "Cannot deactivate Storage while there are running tasks on this Storage.\n-Tasks running: "
                    "ImportVmFromConfiguration\n-Please wait until tasks will finish and try again."
                )
            sd["status"] = "maintenance"
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was deactivated and has moved to 'Preparing "
                "for maintenance' until it will no longer be accessed by any Host of the Data Center.",
                code=DOMAIN_DEACTIVATED,
            )
            self.store.save()

    def activate_storage_domain(self, dc_id: str, sd_id: str) -> None:
        with self.store.lock:
            found = self._attached_imported(dc_id, sd_id)
            if found is None:
                return super().activate_storage_domain(dc_id, sd_id)
            dc, sd = found
            if self.domain_status(sd) != "maintenance":
                raise _status_refusal("activate Storage", self.domain_status(sd))
            sd["status"] = "active"
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was activated by {USER}", code=DOMAIN_ACTIVATED
            )
            self.store.save()

    def _vms_on(self, sd_id: str) -> list[dict]:
        disks = {d for d, disk in self.store["disks"].items() if disk["sd_id"] == sd_id}
        return [vm for vm in self.store["vms"].values() if any(a["disk_id"] in disks for a in vm["disk_attachments"])]

    def detach_storage_domain(self, dc_id: str, sd_id: str) -> None:
        """DetachStorageDomainFromPool of a data domain: in maintenance only; the engine forgets the
        VMs and disks on it (their files stay on the share) and vdsm clears POOL_UUID."""
        with self.store.lock:
            found = self._attached_imported(dc_id, sd_id)
            if found is None:
                return super().detach_storage_domain(dc_id, sd_id)
            dc, sd = found
            if self.domain_status(sd) != "maintenance":
                raise _status_refusal("detach Storage", self.domain_status(sd))
            for vm in self._vms_on(sd_id):  # storageDomainDao.removeEntitesFromStorageDomain
                for snap_id in [s["id"] for s in self.store["snapshots"].values() if s["vm_id"] == vm["id"]]:
                    del self.store["snapshots"][snap_id]
                del self.store["vms"][vm["id"]]
            for disk_id in [d for d, disk in self.store["disks"].items() if disk["sd_id"] == sd_id]:
                for vm in self.store["vms"].values():
                    vm["disk_attachments"] = [a for a in vm["disk_attachments"] if a["disk_id"] != disk_id]
                del self.store["disks"][disk_id]
            sd["dc_id"], sd["status"], sd["unregistered"] = None, None, {}
            self._write_pool(sd)
            self.event(
                f"Storage Domain {sd['name']} was detached from Data Center {dc['name']} by {USER}",
                code=DOMAIN_DETACHED,
            )
            self.store.save()

    # ----- what the domain holds ----------------------------------------------------------

    def _active_imported(self, sd_id: str, action: str) -> dict:
        sd = self.get("storagedomains", sd_id)
        if self.domain_status(sd) != "active":
            raise _status_refusal(action, self.domain_status(sd))
        return sd

    def unregistered_vms(self, sd_id: str) -> list[ovf.OvfVm]:
        """GetUnregisteredVms: the OVF_STORE's VMs read at attach, not registered since."""
        with self.store.lock:
            sd = self.get("storagedomains", sd_id)
            texts = dict(sd.get("unregistered") or {})
        found = []
        for text in texts.values():
            try:
                found.append(ovf.parse_ovf(text))
            except ovf.OvfError as e:
                log.warning("unregistered OVF of %s unreadable: %s", sd["name"], e)
        return found

    def unregistered_vm(self, sd_id: str, vm_id: str) -> ovf.OvfVm:
        found = next((parsed for parsed in self.unregistered_vms(sd_id) if parsed.id == vm_id), None)
        if found is None:
            raise not_found("vms", vm_id)
        return found

    def unregistered_disks(self, sd_id: str) -> list[data_domain.Image]:
        """GetUnregisteredDisks: the images on the domain (asked of vdsm) the engine has no disk of,
        OVF_STOREs aside."""
        with self.store.lock:
            sd = self._active_imported(sd_id, "get unregistered disks of Storage")
            known = set(self.store["disks"])
        return [i for i in data_domain.images(Path(sd["path"])) if i.id not in known and not i.ovf_store]

    # ----- registering a VM -----------------------------------------------------------------

    def register_vm(self, sd_id: str, vm_id: str, action) -> dict:
        """ImportVmFromConfiguration with the images already on the domain: checks, then the VM and its
        disks are made locked and a job unlocks them; returns the job."""
        partial = bool(action.allow_partial_import)
        with self.store.lock:
            sd = self._active_imported(sd_id, "import VM")
            text = (sd.get("unregistered") or {}).get(vm_id)
            if text is None:
                raise not_found("vms", vm_id)
            try:
                parsed = ovf.parse_ovf(text)
            except ovf.OvfError:
                raise bad_request("Cannot import VM. Failed to parse the OVF configuration.") from None
            if action.cluster is not None and (action.cluster.id or action.cluster.name):
                cluster = self.resolve("clusters", action.cluster)
            else:
                cluster = self.find_by_name("clusters", parsed.cluster_name)
                if cluster is None:
                    raise bad_request("Cannot import VM. The relevant Cluster doesn't exist.")
            if cluster["dc_id"] != sd["dc_id"]:
                raise bad_request("Cannot import VM. The selected Storage Domain is not part of the Data Center.")
            name = (action.vm.name if action.vm is not None and action.vm.name else None) or parsed.name
            if parsed.id in self.store["vms"]:
                raise conflict(
                    "Import VM failed - VM ID already exists in the system. Please remove the VM "
                    f"({self.store['vms'][parsed.id]['name']}) from the system first"
                )
            images = {i.id: i for i in data_domain.images(Path(sd["path"]))}
            wanted = [d for d in parsed.disks if d.active]
            existing = [d.alias for d in wanted if d.disk_id in self.store["disks"]]
            if existing and not partial:  # validateDiskImagesNotExistOrShareable
                raise conflict(
                    f"Cannot import VM. The following disks already exist: {', '.join(existing)}. "
                    "Please import as a clone."
                )
            missing = [d for d in wanted if d.disk_id not in images or images[d.disk_id].leaf["id"] != d.volume_id]
            if missing and not partial:
                raise bad_request(
                    "Cannot import VM. VM's Image does not exist.\nIn order to import partial VM, select "
                    "'allow partial' checkbox."
                )
            if any(v["name"] == name for v in self.store["vms"].values()):
                raise conflict(
                    "Import VM failed - VM Name already exists in the Data Center. Please rename the VM in the "
                    "Data Center first"
                )
            skipped = [d.alias for d in wanted if d.alias in existing or d in missing]
            vm = self._new_vm_from_ovf(parsed, vm_id=parsed.id, name=name, cluster=cluster)
            vm["status"] = "image_locked"
            macs = {n["mac"] for v in self.store["vms"].values() for n in v.get("nics", [])}
            vm["nics"] = [
                {
                    "id": n["id"] or new_id(),
                    "name": n["name"],
                    "interface": "virtio",
                    # reassign_bad_macs: a MAC another VM uses gets a new one from the pool.
                    "mac": random_mac()
                    if not n["mac"] or (action.reassign_bad_macs and n["mac"] in macs)
                    else n["mac"],
                }
                for n in parsed.nics
            ]
            disk_ids = []
            for source in wanted:
                if source.alias in skipped:
                    continue
                disk = self._registered_disk(sd, images[source.disk_id], source)
                self.store["disks"][disk["id"]] = disk
                disk_ids.append(disk["id"])
                vm["disk_attachments"].append(
                    {
                        "disk_id": disk["id"],
                        "interface": source.interface,
                        "bootable": source.bootable,
                        "active": True,
                        "pass_discard": False,
                        "read_only": False,
                    }
                )
            for spec in parsed.snapshots:
                self._add_imported_snapshot(vm, vars(spec), disk_ids)
            for disk_id in disk_ids:
                for volume in self.store["disks"][disk_id]["volumes"]:
                    volume.pop("snapshot_id", None)
            del sd["unregistered"][vm_id]
            job_id = self._job(f"Importing VM {name} from configuration to Cluster {cluster['name']}")
            job = self.store["jobs"][job_id]
            job["op"] = {
                "kind": "register",
                "vm_id": vm["id"],
                "sd_id": sd_id,
                "disk_ids": disk_ids,
                "skipped": skipped,
                "ovf": text,  # back to the unregistered ones if it fails
            }
            self.store.save()
        self._spawn(self._run_register, job_id)
        return job

    def _registered_disk(self, sd: dict, image: data_domain.Image, source: ovf.OvfDisk) -> dict:
        """The engine's disk record of an image on the domain: its chain as the .meta files make it."""
        snapshots = {v.volume_id: v.snapshot_id for v in source.chain}
        base, leaf = image.volumes[0]["meta"], image.leaf
        return {
            "id": image.id,
            "name": source.alias,
            "description": source.description,
            "provisioned_size": int(leaf["meta"].get("CAP") or source.provisioned_size),
            "format": leaf["format"],
            "sparse": base.get("TYPE") != "PREALLOCATED",
            "sd_id": sd["id"],
            "status": "locked",
            "backup": source.backup if leaf["format"] == "cow" else "none",
            "content_type": "data",
            "shareable": False,
            "wipe_after_delete": False,
            "volumes": [
                {"id": v["id"], "format": v["format"], "snapshot_id": snapshots.get(v["id"], ovf.ZERO_UUID)}
                for v in image.volumes
            ],
            "created": now_iso(),
        }

    def _run_register(self, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            op = self.store["jobs"][job_id]["op"]
            vm = self.store["vms"][op["vm_id"]]
            disks = [self.store["disks"][d] for d in op["disk_ids"]]
        error = None
        try:
            for disk in disks:  # vdsm prepares each image: its chain must open
                qemu.info(self.volume_path(disk, self.top_volume(disk)), chain=True)
        except qemu.QemuError as e:
            error = e
        if error is not None:
            log.warning("registering VM %s failed: %s", vm["name"], error)
            with self.store.lock:
                self._forget_registration(op)
                cluster = self.store["clusters"][vm["cluster_id"]]
                dc = self.store["datacenters"].get(cluster["dc_id"], {})
                self.event(
                    f"Failed to import Vm {vm['name']} to Data Center {dc.get('name', '')}, Cluster {cluster['name']}",
                    severity="error",
                    code=1153,
                    vm_id=vm["id"],
                )
                self._end_job(job_id, False)
                self.store.save()
            return
        with self.store.lock:
            for disk in disks:
                disk["status"] = "ok"
            vm["status"] = "down"
            skipped = ", ".join(op["skipped"])
            self.event(
                f"VM {vm['name']} has been imported from the given configuration but the following disk(s) failed "
                f"to attach: {skipped}."
                if skipped
                else f"VM {vm['name']} has been successfully imported from the given configuration.",
                severity="warning" if skipped else "normal",
                code=REGISTERED_WITHOUT_DISKS if skipped else REGISTERED,
                vm_id=vm["id"],
            )
            self._end_job(job_id, True)
            self.store.save()

    def _forget_registration(self, op: dict) -> None:
        """A registration that failed: the VM and its disk records go, the files stay (the domain's)
        and the VM is unregistered again."""
        sd = self.store["storagedomains"].get(op["sd_id"])
        if sd is not None:
            sd.setdefault("unregistered", {})[op["vm_id"]] = op["ovf"]
        self.store["vms"].pop(op["vm_id"], None)
        for snap_id in [s["id"] for s in self.store["snapshots"].values() if s["vm_id"] == op["vm_id"]]:
            del self.store["snapshots"][snap_id]
        for disk_id in op["disk_ids"]:
            self.store["disks"].pop(disk_id, None)

    def recover(self) -> None:
        """After a restart: a registration in flight failed. Ended here, before the other jobs are
        recovered: their recovery removes a failed import's images, which here are the share's."""
        with self.store.lock:
            for job in self.store["jobs"].values():
                op = job.get("op") or {}
                if job["status"] == "started" and op.get("kind") == "register":
                    self._forget_registration(op)
                    self._end_job(job["id"], False)
            self.store.save()
        super().recover()
