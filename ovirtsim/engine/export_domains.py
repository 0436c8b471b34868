"""Export storage domains (legacy): export a VM to one, list what it holds, remove, import back.

An export domain here is a directory laid out as vdsm lays out an NFS export domain, under the
share's root: the directory a node of this machine serves over NFS when the domain's address is a
loopback one (the hosts mount it, and see that directory), else `STATE/exports/NAME`:

    SD_ID/dom_md/metadata               CLASS=Backup, the domain's vdsm metadata
    SD_ID/images/DISK_ID/VOL_ID(.meta)  each exported volume and its vdsm metadata
    SD_ID/master/vms/VM_ID/VM_ID.ovf    each exported VM's OVF (vdsm's updateVM)

Every file and directory on the share belongs to uid/gid 36:36 (vdsm:kvm), as the hosts write
them. The engine keeps no record of what the share holds: listing reads the OVFs on it (vdsm's
getVmsInfo, then the engine's OVF reader), so files put there by hand show up too.

Export (ExportVmCommand), removal (RemoveVmFromImportExportCommand) and import
(ImportVmCommand) check what the engine checks, in its order and with its messages; export and
import run as engine jobs with their audit log events, the VM and disks locked meanwhile.
"""

import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from ovirtsim import image_copy, lvm, ovf, qemu, storage_net, volume_meta
from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found
from ovirtsim.storage_net import is_loopback

log = logging.getLogger("ovirtsim")

# vdsm runs as vdsm:kvm (36:36) on every host: an export domain's share must let it write, and
# what it writes there belongs to it.
SHARE_UID = SHARE_GID = 36
IMAGE_DIR_MODE = 0o755
VOLUME_MODE = 0o660  # vdsm's FILE_VOLUME_PERMISSIONS and METADATA_PERMISSIONS

# The engine's audit log types (AuditLogType) for these commands.
EXPORT_STARTED, EXPORT_DONE, EXPORT_FAILED = 1162, 1150, 1151
IMPORT_STARTED, IMPORT_DONE, IMPORT_FAILED = 1165, 1152, 1153
REMOVED_FROM_EXPORT = 1160
DOMAIN_ADDED, DOMAIN_ACTIVATED = 956, 966
OVF_UNREADABLE = 1168
USER = "admin@internal-authz"


def nfs_mount_problem(address: str, path: str, mount_options: str, netns: Path | None = None) -> str:
    """What a host's NFS mount of ADDRESS:PATH would fail with ("" when it is served): asked of the
    server with libnfs (NFSv4, the port from the connection's mount options, else 2049), from the
    hosts' storage network when there is one (`netns`, storage_net.py), as the hosts mount there."""
    port = next((o.split("=", 1)[1] for o in mount_options.split(",") if o.strip().startswith("port=")), "2049")
    if not path.startswith("/") or not port.strip().isdigit():
        return f"mount options {mount_options!r} or path {path!r} are not a mount's"
    try:
        listed = subprocess.run(
            storage_net.nsenter(netns, ["nfs-ls", f"nfs://{address}{path}?version=4&nfsport={port.strip()}"]),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        return "the simulator cannot mount NFS: install libnfs-utils"
    except subprocess.TimeoutExpired:
        return "the NFS server did not answer"
    if listed.returncode != 0:
        return (listed.stderr.strip() or listed.stdout.strip() or "the share is not served").splitlines()[-1]
    return ""


def chown_share(path: Path) -> None:
    """Give a path on the share to vdsm:kvm, as a host's vdsm would have made it. Not root (a
    developer's run): left as it is, since only root may give files away."""
    if os.geteuid() == 0:
        os.chown(path, SHARE_UID, SHARE_GID, follow_symlinks=False)


def _make_dir(path: Path) -> None:
    """Each missing directory down to `path`, owned by vdsm:kvm."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=IMAGE_DIR_MODE)
        chown_share(directory)


def is_template_ovf(text: str) -> bool:
    """The engine's OvfParser.isTemplate: a template's OVF names itself as its own template."""
    try:
        env = ET.fromstring(text)
    except ET.ParseError:
        return False
    content = env.find("Content")
    if content is None:
        return False
    template_id = (content.findtext("TemplateId") or "").strip() or "1"
    for section in content.findall("Section"):
        if section.get(f"{{{ovf.NS['xsi']}}}type") == "ovf:OperatingSystemSection_Type":
            return template_id == section.get(f"{{{ovf.NS['ovf']}}}id", "2")
    return False


class ExportDomains(EngineCore):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The engine's in-memory locks on a VM of an export domain (LockingGroup.REMOTE_VM): an
        # import holds it ("import"), a removal from the domain too ("remove"); they exclude each other.
        self._remote_vm_locks: dict[str, str] = {}
        self._remote_vm_guard = threading.Lock()

    # ----- the domain and its share -------------------------------------------------------

    def export_domain_dirs(self) -> dict[str, str]:
        """Each export domain's share root (what a node serves over NFS), by domain name."""
        with self.store.lock:
            return {
                sd["name"]: str(Path(sd["path"]).parent)
                for sd in self.store["storagedomains"].values()
                if sd["type"] == "export"
            }

    def init_export_domain(self, sd: dict) -> None:
        """The layout vdsm makes when it creates a file export domain (kept when it exists)."""
        root = Path(sd["path"])
        for sub in ("dom_md", "images", "master/vms", "master/tasks"):
            _make_dir(root / sub)
        # The share's root too (vdsm can write to an NFS export only when 36:36 own it), when the
        # domain has one of its own (a state made before export domains had: STATE/storage).
        shares = (".",) if root.parent.parent.name != "exports" else ("..", ".")
        for sub in (*shares, "dom_md", "images", "master", "master/vms", "master/tasks"):
            chown_share(root / sub)
        if not (root / "dom_md" / "metadata").exists():
            self._write_domain_metadata(sd)

    def _write_domain_metadata(self, sd: dict) -> None:
        """vdsm's dom_md/metadata of the domain (POOL_UUID: the data center it is attached to)."""
        metadata = Path(sd["path"]) / "dom_md" / "metadata"
        pool = sd.get("dc_id") or ""
        # vdsm's file domain metadata; ISO and export domains keep storage format V1 ("0").
        fields = {
            "CLASS": "Backup",
            "DESCRIPTION": sd["name"],
            "IOOPTIMEOUTSEC": "10",
            "LEASERETRIES": "3",
            "LEASETIMESEC": "60",
            "LOCKPOLICY": "",
            "LOCKRENEWALINTERVALSEC": "5",
            "POOL_UUID": pool,
            "REMOTE_PATH": f"{sd.get('address')}:{sd.get('export_path')}",
            "ROLE": "Regular",
            "SDUUID": sd["id"],
            "TYPE": "NFS",
            "VERSION": "0",
        }
        lines = [f"{key}={fields[key]}" for key in sorted(fields)]
        checksum = hashlib.sha1("".join(lines).encode("ascii", "xmlcharrefreplace")).hexdigest()
        metadata.write_text("\n".join([*lines, f"_SHA_CKSUM={checksum}"]) + "\n")
        metadata.chmod(VOLUME_MODE)
        chown_share(metadata)

    def _export_domain(self, ref, *, action: str) -> dict:
        """The export domain an action names, checked as ExportVmCommand checks its target."""
        if ref is None or not (getattr(ref, "id", None) or getattr(ref, "name", None)):
            raise EngineFault(
                400, f"Action [storageDomain.id|name] required for {action}", reason="Incomplete parameters"
            )
        if ref.id:
            sd = self.store["storagedomains"].get(ref.id)
            if sd is None:
                raise bad_request(f"Cannot {action} VM. Storage Domain doesn't exist.")
            return sd
        sd = self.find_by_name("storagedomains", ref.name)
        if sd is None:
            raise not_found("storagedomains", f"Storage: name={ref.name}")
        return sd

    def _vms_dir(self, sd: dict) -> Path:
        return Path(sd["path"]) / "master" / "vms"

    def _image_dir(self, sd: dict, disk_id: str) -> Path:
        return Path(sd["path"]) / "images" / disk_id

    # ----- the domain in a data center -------------------------------------------------------

    def add_export_domain(self, spec) -> dict:
        """AddNFSStorageDomain for an export domain: a new, unattached domain on its own share. A
        share served from this machine (a loopback address) is its path here, as the hosts mount
        it, and must exist as a directory, else the hosts fail to mount it; any other share is
        STATE/exports/NAME. Other kinds of domain are not simulated."""
        for field, present in (
            ("host.id|name", spec.host is not None and (spec.host.id or spec.host.name)),
            ("type", spec.type is not None),
            ("storage", spec.storage is not None),
        ):
            if not present:
                raise EngineFault(400, f"StorageDomain [{field}] required for add", reason="Incomplete parameters")
        storage_type = spec.storage.type.value if spec.storage.type else None
        if spec.type.value != "export" or storage_type != "nfs":
            raise EngineFault(
                501,
                f"Adding a storage domain of type {spec.type.value} on {storage_type} storage is not simulated "
                "(only NFS export domains).",
                reason="Not Implemented",
            )
        for field in ("address", "path"):
            if not getattr(spec.storage, field):
                raise EngineFault(400, f"HostStorage [{field}] required for add", reason="Incomplete parameters")
        if not spec.name:
            raise EngineFault(400, "StorageDomain [name] required for add", reason="Incomplete parameters")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", spec.name):  # the name is also the share's directory here
            raise bad_request("Storage Domain name must be formed of 'a-z', 'A-Z', '0-9', '_' or '-' characters")
        share = self.dir / "exports" / spec.name
        with self.store.lock:
            self.resolve("hosts", spec.host)
            if self.find_by_name("storagedomains", spec.name) is not None:
                raise conflict("Cannot add Storage. The Storage Domain name is already in use.")
            for other in self.store["storagedomains"].values():
                if (other.get("address"), other.get("export_path")) == (spec.storage.address, spec.storage.path):
                    raise conflict(
                        f"Cannot add Storage Connection. Storage connection {other['id']} already exists for "
                        f"{other['name']}."
                    )
            if is_loopback(spec.storage.address):
                # The host mounts it over NFS; a share served by the path of a directory of this machine
                # (as a node of ours serves its staging share) is that directory here.
                share = Path(spec.storage.path)
                options = spec.storage.mount_options or ""
                problem = nfs_mount_problem(spec.storage.address, spec.storage.path, options, self.storage_netns)
                if problem or not share.is_dir():
                    # vdsm's mount fails (MountError, 477), and the engine says so.
                    raise bad_request(
                        f"Cannot add Storage Connection. Problem while trying to mount target "
                        f"{spec.storage.address}:{spec.storage.path}: {problem or 'no such directory here'}."
                    )
            sd_id = new_id()
            sd = {
                "id": sd_id,
                "name": spec.name,
                "description": spec.description or "",
                "type": "export",
                "storage_type": "nfs",
                "block": False,
                "dc_id": None,
                "path": str(share / sd_id),
                "master": False,
                "capacity": 256 * 1024**3,
                "export_path": spec.storage.path,
                "address": spec.storage.address,
                "mount_options": spec.storage.mount_options or None,
                "vfs_type": None,
                "lvm": False,
            }
            (self.dir / "exports").mkdir(exist_ok=True)  # the simulator's, not the share's
            self.init_export_domain(sd)
            self.store["storagedomains"][sd_id] = sd
            self.event(f"Storage Domain {sd['name']} was added by {USER}", code=DOMAIN_ADDED)
            self.store.save()
            return sd

    def domain_status(self, sd: dict) -> str:
        """active, maintenance or unattached (the engine's StorageDomainStatus, as the API spells it)."""
        return (sd.get("status") or "active") if sd.get("dc_id") else "unattached"

    def attach_storage_domain(self, dc_id: str, ref) -> dict:
        """AttachStorageDomainToPool (then activated, as the engine does after attaching): an
        unattached export domain joins the data center, which may hold only one."""
        with self.store.lock:
            dc = self.get("datacenters", dc_id)
            sd = self.resolve("storagedomains", ref)
            if sd.get("dc_id"):
                status = self.domain_status(sd).capitalize()
                raise conflict(f"Cannot attach Storage. The relevant Storage Domain's status is {status}.")
            if sd["type"] != "export":
                raise EngineFault(
                    501,
                    "Attaching a data or ISO domain is not simulated (only export domains).",
                    reason="Not Implemented",
                )
            # StorageDomainToPoolRelationValidator.validateAmountOfIsoAndExportDomainsInDC
            if any(o["type"] == "export" and o.get("dc_id") == dc["id"] for o in self.store["storagedomains"].values()):
                raise conflict(
                    "Cannot attach more than one Import/Export Storage Domain to the same Data Center. If you want "
                    "to use a newly created Domain, detach the existing attached Domain and attach the new one."
                )
            sd["dc_id"], sd["status"] = dc["id"], "active"
            self._write_domain_metadata(sd)
            self.event(f"Storage Domain {sd['name']} was attached to Data Center {dc['name']} by {USER}", code=962)
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was activated by {USER}", code=DOMAIN_ACTIVATED
            )
            self.store.save()
            return sd

    def _attached_export_domain(self, dc_id: str, sd_id: str, action: str) -> tuple[dict, dict]:
        dc = self.get("datacenters", dc_id)
        sd = self.get("storagedomains", sd_id)
        if sd.get("dc_id") != dc["id"]:
            raise not_found("storagedomains", sd_id)
        if sd["type"] != "export":
            raise EngineFault(
                501,
                f"To {action} a data or ISO domain is not simulated (only export domains).",
                reason="Not Implemented",
            )
        return dc, sd

    def deactivate_storage_domain(self, dc_id: str, sd_id: str) -> None:
        """DeactivateStorageDomain: the export domain goes to maintenance; refused while an export or
        import uses it, as the engine refuses it while the domain has tasks."""
        with self.store.lock:
            dc, sd = self._attached_export_domain(dc_id, sd_id, "deactivate")
            if self.domain_status(sd) != "active":
                raise conflict(
                    f"Cannot deactivate Storage. The relevant Storage Domain's status is "
                    f"{self.domain_status(sd).capitalize()}."
                )
            running = sorted(
                {
                    "ExportVm" if j["op"]["kind"] == "export" else "ImportVm"
                    for j in self.store["jobs"].values()
                    if j["status"] == "started" and j.get("op", {}).get("sd_id") == sd["id"]
                }
            )
            if running:
                raise conflict(
                    "Cannot deactivate Storage while there are running tasks on this Storage.\n-Tasks running: "
                    f"{', '.join(running)}\n-Please wait until tasks will finish and try again."
                )
            sd["status"] = "maintenance"
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was deactivated and has moved to 'Preparing "
                "for maintenance' until it will no longer be accessed by any Host of the Data Center.",
                code=968,
            )
            self.store.save()

    def activate_storage_domain(self, dc_id: str, sd_id: str) -> None:
        with self.store.lock:
            dc, sd = self._attached_export_domain(dc_id, sd_id, "activate")
            if self.domain_status(sd) != "maintenance":
                raise conflict(
                    f"Cannot activate Storage. The relevant Storage Domain's status is "
                    f"{self.domain_status(sd).capitalize()}."
                )
            sd["status"] = "active"
            self.event(
                f"Storage Domain {sd['name']} (Data Center {dc['name']}) was activated by {USER}", code=DOMAIN_ACTIVATED
            )
            self.store.save()

    def detach_storage_domain(self, dc_id: str, sd_id: str) -> None:
        """DetachStorageDomainFromPool: only a domain in maintenance; its share keeps what it holds."""
        with self.store.lock:
            dc, sd = self._attached_export_domain(dc_id, sd_id, "detach")
            if self.domain_status(sd) != "maintenance":
                raise conflict(
                    f"Cannot detach Storage. The relevant Storage Domain's status is "
                    f"{self.domain_status(sd).capitalize()}."
                )
            sd["dc_id"], sd["status"] = None, None
            self._write_domain_metadata(sd)
            self.event(f"Storage Domain {sd['name']} was detached from Data Center {dc['name']} by {USER}", code=964)
            self.store.save()

    # ----- what the share holds -------------------------------------------------------------

    def exported(self, sd_id: str, *, templates: bool = False) -> list[ovf.OvfVm]:
        """The VMs (or templates) on an export domain, read from the OVFs on its share; one that
        cannot be read is left out with the engine's warning event, as GetVmsFromExportDomain does."""
        sd = self.get("storagedomains", sd_id)
        if sd["type"] != "export":
            return []
        found = []
        vms_dir = self._vms_dir(sd)
        for entry in sorted(vms_dir.iterdir()) if vms_dir.is_dir() else []:
            path = entry / f"{entry.name}.ovf"
            try:
                text = path.read_text()
            except OSError:
                continue
            if is_template_ovf(text) != templates:
                continue
            try:
                found.append(ovf.parse_ovf(text))
            except ovf.OvfError as e:
                self.event(
                    f"Failed to read VM '{entry.name}' OVF, it may be corrupted. Underlying error message: {e}",
                    severity="warning",
                    code=OVF_UNREADABLE,
                )
        return found

    def exported_vm(self, sd_id: str, vm_id: str) -> ovf.OvfVm:
        for parsed in self.exported(sd_id):
            if parsed.id == vm_id:
                return parsed
        raise not_found("vms", vm_id)

    def exported_template(self, sd_id: str, template_id: str) -> ovf.OvfVm:
        for parsed in self.exported(sd_id, templates=True):
            if parsed.id == template_id:
                return parsed
        raise not_found("templates", template_id)

    def export_usage(self, sd: dict) -> int:
        """Bytes the share's files of a domain occupy."""
        total = 0
        for dirpath, _, files in os.walk(sd["path"]):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
        return total

    # ----- export ---------------------------------------------------------------------------

    def export_vm(self, vm_id: str, action) -> dict:
        """ExportVmCommand: checks, locks the VM and its disks, starts the job; returns the job."""
        force = bool(action.exclusive)
        collapse = bool(action.discard_snapshots)
        with self.store.lock:
            vm = self.get("vms", vm_id)
            sd = self._export_domain(action.storage_domain, action="export")
            if self.domain_status(sd) != "active":  # StorageDomainValidator.isDomainExistAndActive
                raise conflict(
                    f"Cannot export VM. The relevant Storage Domain's status is {self.domain_status(sd).capitalize()}."
                )
            disks = self._exported_disks(vm)
            illegal = [d["name"] for d in disks if d["status"] == "illegal"]
            if illegal:
                raise EngineFault(
                    500,
                    f"[Cannot export VM. The following attached disks are in ILLEGAL status: {', '.join(illegal)} "
                    "- please remove them and try again.]",
                )
            locked = [d["name"] for d in disks if d["status"] == "locked"]
            if locked:
                raise conflict(
                    f"Cannot export VM: The following disks are locked: {', '.join(locked)}. "
                    "Please try again in a few minutes."
                )
            cluster = self.store["clusters"][vm["cluster_id"]]
            if sd["dc_id"] != cluster["dc_id"]:
                raise conflict("Cannot export VM. The target Data Center does not contain the VM.")
            if sd["type"] != "export":
                raise bad_request(f"Cannot export VM. The specified domain '{sd['name']}' is not an export domain.")
            needed = sum(self.store_actual(d, v["id"]) for d in disks for v in d["volumes"])
            if needed > sd.get("capacity", 0) - self.export_usage(sd):
                raise conflict(f"Cannot export VM. Low disk space on Storage Domain {sd['name']}.")
            for other in self.exported(sd["id"]):
                if other.id == vm["id"]:
                    if not force:
                        raise conflict("Cannot export VM. VM with the same identifier already exists.")
                elif other.name == vm["name"]:
                    raise conflict(
                        "Cannot export VM. The VM name is already in use, please choose a unique name and try again."
                    )
            if any(s["vm_id"] == vm_id and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(
                    "Cannot export VM. The VM is performing an operation on a Snapshot. Please wait for the "
                    "operation to finish, and try again."
                )
            if vm["status"] != "down":
                raise conflict("Cannot export VM. At least one of the VMs is not down.")
            # vmHandler.lockVm, and CopyImageGroup locks each disk it copies.
            vm["status"] = "image_locked"
            for disk in disks:
                disk["status"] = "locked"
            job_id = self._job(f"Exporting VM {vm['name']} To Export Domain {sd['name']}")
            job = self.store["jobs"][job_id]
            job["op"] = {"kind": "export", "vm_id": vm_id, "sd_id": sd["id"], "disk_ids": [d["id"] for d in disks]}
            self.event(f"Starting export Vm {vm['name']} to {sd['name']}", code=EXPORT_STARTED, vm_id=vm_id)
            self.store.save()
        self._spawn(self._run_export, job_id, collapse)
        return job

    def _exported_disks(self, vm: dict) -> list[dict]:
        """The disks an export takes: image disks plugged into the VM, not shareable (ONLY_ACTIVE)."""
        disks = []
        for a in vm["disk_attachments"]:
            disk = self.store["disks"].get(a["disk_id"])
            if disk is not None and a["active"] and not disk["shareable"]:
                disks.append(disk)
        return disks

    def _run_export(self, job_id: str, collapse: bool) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            op = self.store["jobs"][job_id]["op"]
            vm = self.store["vms"][op["vm_id"]]
            sd = self.store["storagedomains"][op["sd_id"]]
            disks = [self.store["disks"][d] for d in op["disk_ids"]]
        error = None
        written: list[ovf.OvfDisk] = []
        try:
            for disk in disks:
                written.append(self._export_disk(vm, disk, sd, collapse=collapse))
            self._write_vm_ovf(sd, self._export_ovf(vm, written, collapse=collapse))
        except Exception as e:  # whatever went wrong, the VM and its disks are unlocked below
            if not isinstance(e, (qemu.QemuError, lvm.LvmError, OSError)):
                log.exception("export of VM %s failed", vm["name"])
            error = e
        with self.store.lock:
            for disk in disks:
                self._unlock_disk(disk["id"])
            if vm["status"] == "image_locked":
                vm["status"] = "down"  # vmHandler.unLockVm
            if error is None:
                self.event(
                    f"Vm {vm['name']} was exported successfully to {sd['name']}", code=EXPORT_DONE, vm_id=vm["id"]
                )
            else:
                log.warning("export of VM %s to %s failed: %s", vm["name"], sd["name"], error)
                self.event(
                    f"Failed to export Vm {vm['name']} to {sd['name']}",
                    severity="error",
                    code=EXPORT_FAILED,
                    vm_id=vm["id"],
                )
            self._end_job(job_id, error is None)
            self.store.save()

    def _export_disk(self, vm: dict, disk: dict, sd: dict, *, collapse: bool) -> ovf.OvfDisk:
        """One disk's volumes into the export domain, as CopyImageGroup (LeafVol) copies them: the
        image directory replaced, then the chain collapsed into one volume named by the leaf, or
        copied volume by volume."""
        with self.store.lock:
            volumes = [dict(v) for v in disk["volumes"]]
            attachment = next(a for a in vm["disk_attachments"] if a["disk_id"] == disk["id"])
            snap_of = {v["id"]: (self.snapshot_of_volume(disk, v["id"]) or {}).get("id") for v in volumes}
            active_id = vm["active_snapshot_id"]
            base_sparse = disk["sparse"]
            capacity = disk["provisioned_size"]
            size = capacity if self.on_lvm(disk) else None
        image_dir = self._image_dir(sd, disk["id"])
        shutil.rmtree(image_dir, ignore_errors=True)  # a forced export replaces the image
        _make_dir(image_dir)
        leaf = volumes[-1]
        if collapse:
            # Named by the leaf, with the base's format and allocation (getDiskForVolumeInfo).
            copied = [{"id": leaf["id"], "format": volumes[0]["format"]}]
        else:
            copied = [{"id": v["id"], "format": v["format"]} for v in volumes]
        with self._volume_locks[disk["id"]], self.prepared(disk) as host_id:
            for index, volume in enumerate(copied):
                dest = image_dir / volume["id"]
                if collapse:
                    # The leaf read through its chain: the guest-visible content, in one volume.
                    path = self.volume_path(disk, leaf["id"], host_id=host_id)
                    source = image_copy.source_args(path, leaf["format"], size=size)
                    image_copy.copy_volume(source, dest, fmt=volume["format"], preallocate=not base_sparse)
                else:
                    path = self.volume_path(disk, volume["id"], host_id=host_id)
                    parent = copied[index - 1] if index else None
                    image_copy.copy_volume(
                        image_copy.source_args(path, volume["format"], size=size),
                        dest,
                        fmt=volume["format"],
                        preallocate=not base_sparse and index == 0,
                        parent=image_dir / parent["id"] if parent else None,
                        parent_fmt=parent["format"] if parent else None,
                    )
                dest.chmod(VOLUME_MODE)
                chown_share(dest)
        for meta in volume_meta.write_image_meta(
            image_dir,
            domain_id=sd["id"],
            image_id=disk["id"],
            capacity=capacity,
            volumes=copied,
            alias=disk["name"],
            description=disk["description"],
            sparse=base_sparse,
        ):
            meta.chmod(VOLUME_MODE)
            chown_share(meta)
        actual = {v["id"]: qemu.actual_size(image_dir / v["id"]) for v in copied}
        return ovf.OvfDisk(
            disk_id=disk["id"],
            volume_id=leaf["id"],
            alias=disk["name"],
            description=disk["description"],
            provisioned_size=capacity,
            actual_size=actual[leaf["id"]],
            format=copied[-1]["format"],
            sparse=base_sparse if len(copied) == 1 else True,
            interface=attachment["interface"],
            bootable=attachment["bootable"],
            active=attachment["active"],
            storage_domain_id=sd["id"],
            backup=disk["backup"],
            snapshot_id=active_id,
            chain=[
                ovf.OvfVolume(
                    volume_id=v["id"],
                    format=v["format"],
                    sparse=base_sparse if i == 0 else True,
                    snapshot_id=snap_of.get(v["id"]) or ovf.ZERO_UUID,
                    actual_size=actual[v["id"]],
                )
                for i, v in enumerate(copied[:-1])
            ],
        )

    def _export_ovf(self, vm: dict, disks: list[ovf.OvfDisk], *, collapse: bool) -> str:
        """The OVF the engine writes into the export domain: the Active VM only when the snapshots
        were discarded, else every snapshot of the VM (their images are in the disks' chains)."""
        with self.store.lock:
            cluster = self.store["clusters"].get(vm["cluster_id"], {})
            snapshots = [] if collapse else [s for s in self.vm_snapshots(vm["id"]) if s["type"] == "regular"]
            active = self.store["snapshots"].get(vm["active_snapshot_id"], {})
            return self.ovf_of(
                vm,
                cluster,
                disks,
                snapshots=[
                    *(ovf.OvfSnapshot(s["id"], "REGULAR", s["description"], s["date"]) for s in snapshots),
                    ovf.OvfSnapshot(vm["active_snapshot_id"], "ACTIVE", "Active VM", active.get("date", now_iso())),
                ],
            )

    def _write_vm_ovf(self, sd: dict, text: str) -> None:
        """vdsm's updateVM: the VM's directory under master/vms made anew with its OVF."""
        vm_id = ovf.parse_ovf(text).id
        vm_dir = self._vms_dir(sd) / vm_id
        shutil.rmtree(vm_dir, ignore_errors=True)
        _make_dir(vm_dir)
        path = vm_dir / f"{vm_id}.ovf"
        path.write_text(text, encoding="utf-8")
        chown_share(path)

    # ----- removal from the export domain ---------------------------------------------------

    def remove_exported_vm(self, sd_id: str, vm_id: str) -> None:
        """RemoveVmFromImportExportCommand: the OVF (vdsm's removeVM) and the VM's images go."""
        with self.store.lock:
            sd = self.get("storagedomains", sd_id)
            parsed = self.exported_vm(sd_id, vm_id)
            engine_vm = self.store["vms"].get(vm_id)
            if engine_vm is not None and engine_vm["status"] == "image_locked" and self._exporting(vm_id, sd_id):
                raise conflict("Cannot remove VM: VM is being exported now. Please try again in a few minutes.")
            with self._remote_vm_guard:
                if vm_id in self._remote_vm_locks:
                    raise conflict(f"Cannot remove VM. VM {parsed.name} is being imported.")
                self._remote_vm_locks[vm_id] = "remove"
        try:
            shutil.rmtree(self._vms_dir(sd) / vm_id, ignore_errors=True)
            for disk in parsed.disks:
                if disk.active:
                    shutil.rmtree(self._image_dir(sd, disk.disk_id), ignore_errors=True)
        finally:
            with self._remote_vm_guard:
                self._remote_vm_locks.pop(vm_id, None)
        self.event(f"Vm {parsed.name} was removed from {sd['name']}", code=REMOVED_FROM_EXPORT)

    def _exporting(self, vm_id: str, sd_id: str) -> bool:
        return any(
            j["status"] == "started" and j.get("op", {}).get("kind") == "export" and j["op"]["vm_id"] == vm_id
            for j in self.store["jobs"].values()
        )

    # ----- restart ----------------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart: exports, imports and clones in flight failed, as after an engine crash
        whose tasks did not survive: the VM is unlocked, a VM being made goes with its disks."""
        super().recover()
        with self.store.lock:
            export_domains = [sd for sd in self.store["storagedomains"].values() if sd["type"] == "export"]
            unfinished = [j for j in self.store["jobs"].values() if j["status"] == "started" and j.get("op")]
        for sd in export_domains:
            self.init_export_domain(sd)
        for job in unfinished:
            op = job["op"]
            with self.store.lock:
                vm = self.store["vms"].get(op["vm_id"])
                name = vm["name"] if vm else op["vm_id"]
            if op["kind"] == "export":
                with self.store.lock:
                    if vm is not None and vm["status"] == "image_locked":
                        vm["status"] = "down"
                    sd = self.store["storagedomains"].get(op["sd_id"], {})
                    self.event(
                        f"Failed to export Vm {name} to {sd.get('name', '')}", severity="error", code=EXPORT_FAILED
                    )
            else:
                disk_ids = [d[0] for d in op["disks"]] if op["kind"] == "import" else op["disk_ids"]
                self._discard_new_vm(op["vm_id"], disk_ids)
                with self.store.lock:
                    if op["kind"] == "import":
                        self.event(f"Failed to import Vm {name}", severity="error", code=IMPORT_FAILED)
                    else:
                        self.event(f"Failed to complete VM {name} creation.", severity="error", code=60)
            with self.store.lock:
                self._end_job(job["id"], False)
                self.store.save()


def random_mac() -> str:
    """A MAC from the engine's default pool range (56:6f:...), as a cloned VM's NICs get new ones."""
    return "56:6f:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:4])
