"""VMs: add (blank or from an OVF configuration), update, remove, power actions, their OVF."""

import shutil
import time
from pathlib import Path

from ovirtsim import ovf, qemu
from ovirtsim.engine.core import EngineCore, GiB, new_id, now_iso
from ovirtsim.errors import bad_request, conflict


class Vms(EngineCore):
    def _check_vm_name(self, name: str, exclude: str | None = None) -> None:
        if not name:
            raise bad_request("Cannot add VM. The VM name is required (name).")
        for vm in self.store["vms"].values():
            if vm["name"] == name and vm["id"] != exclude:
                raise conflict(
                    "Cannot add VM. The VM name is already in use, please choose a unique name and try again."
                )

    def _new_vm(
        self,
        *,
        vm_id: str,
        name: str,
        cluster: dict,
        description: str = "",
        memory: int = GiB,
        sockets: int = 1,
        cores: int = 1,
        threads: int = 1,
        os_type: str = "other",
        guest_agent: bool = True,
    ) -> dict:
        active_id = new_id()
        vm = {
            "id": vm_id,
            "name": name,
            "description": description,
            "cluster_id": cluster["id"],
            "host_id": None,
            "status": "down",
            "memory": memory,
            "sockets": sockets,
            "cores": cores,
            "threads": threads,
            "os_type": os_type,
            "guest_agent": guest_agent,
            "creation_time": now_iso(),
            "disk_attachments": [],
            "nics": [],
            "tags": [],
            "active_snapshot_id": active_id,
            "virtio_scsi": True,  # the Blank template's VirtIO-SCSI controller
        }
        self.store["vms"][vm_id] = vm
        self.store["snapshots"][active_id] = {
            "id": active_id,
            "vm_id": vm_id,
            "description": "Active VM",
            "type": "active",
            "status": "ok",
            "date": now_iso(),
            "persist_memorystate": False,
            "volumes": {},
            "ovf": None,
        }
        return vm

    def _new_vm_from_ovf(self, parsed, *, vm_id: str, name: str, cluster: dict) -> dict:
        """A new VM with an OVF's configuration (an import's, one recreated from an OVF)."""
        return self._new_vm(
            vm_id=vm_id,
            name=name,
            cluster=cluster,
            description=parsed.description,
            memory=parsed.memory,
            sockets=parsed.sockets,
            cores=parsed.cores,
            threads=parsed.threads,
            os_type=parsed.os_type,
        )

    def _discard_new_vm(self, vm_id: str, disk_ids: list[str]) -> None:
        """A VM made by an import or a clone that failed goes with its disks (endWithFailure)."""
        with self.store.lock:
            self.store["vms"].pop(vm_id, None)
            for snap_id in [s["id"] for s in self.store["snapshots"].values() if s["vm_id"] == vm_id]:
                del self.store["snapshots"][snap_id]
            disks = [self.store["disks"].pop(d, None) for d in disk_ids]
            self.store.save()
        for disk in disks:
            if disk is None:
                continue
            sd = self.store["storagedomains"][disk["sd_id"]]
            if sd.get("lvm"):
                for volume in reversed(disk["volumes"]):
                    if volume.get("md_slot") is not None or volume.get("lv_size"):
                        self._remove_lv_volume(disk, volume)
            else:
                shutil.rmtree(Path(sd["path"]) / "images" / disk["id"], ignore_errors=True)

    def add_vm(self, spec, *, clone: bool = False) -> dict:
        configuration = spec.initialization.configuration if spec.initialization else None
        if configuration is not None and configuration.data:
            return self._add_vm_from_ovf(spec, configuration, clone=clone)
        if spec.snapshots:  # the engine's AddVmFromSnapshot (engine/vm_clones.py)
            return self.clone_vm_from_snapshot(spec)
        with self.store.lock:
            cluster = self.resolve("clusters", spec.cluster)
            self._check_vm_name(spec.name)
            topology = spec.cpu.topology if spec.cpu and spec.cpu.topology else None
            vm = self._new_vm(
                vm_id=new_id(),
                name=spec.name,
                cluster=cluster,
                description=spec.description or "",
                memory=spec.memory or GiB,
                sockets=(topology.sockets if topology else None) or 1,
                cores=(topology.cores if topology else None) or 1,
                threads=(topology.threads if topology else None) or 1,
                os_type=(spec.os.type if spec.os else None) or "other",
            )
            if spec.virtio_scsi is not None and spec.virtio_scsi.enabled is not None:
                vm["virtio_scsi"] = bool(spec.virtio_scsi.enabled)
            self.event(f"VM {vm['name']} was created by admin@internal-authz.", code=34, vm_id=vm["id"])
            self.store.save()
            return vm

    def _add_vm_from_ovf(self, spec, configuration, *, clone: bool) -> dict:
        if configuration.type is not None and configuration.type.value != "ovf":
            raise bad_request(f"Configuration type {configuration.type.value!r} is not supported; use ovf.")
        try:
            parsed = ovf.parse_ovf(configuration.data)
        except ovf.OvfError as e:
            raise bad_request(f"Cannot import VM. Failed to parse the OVF configuration: {e}") from None
        with self.store.lock:
            if spec.cluster is not None:
                cluster = self.resolve("clusters", spec.cluster)
            else:
                cluster = self.find_by_name("clusters", parsed.cluster_name)
                if cluster is None:
                    raise bad_request(
                        f"Cannot import VM. Cluster {parsed.cluster_name!r} of the OVF does not exist; name a cluster."
                    )
            vm_id = new_id() if clone else parsed.id
            if vm_id in self.store["vms"]:
                raise conflict("Cannot import VM. VM with the same identifier already exists (use clone=true).")
            name = spec.name or parsed.name
            self._check_vm_name(name)
            attach = []
            for d in parsed.disks:
                disk = self.store["disks"].get(d.disk_id)
                if disk is None:
                    continue  # the engine imports the configuration; missing images are left out
                owner = self.vm_of_disk(d.disk_id)
                if owner is not None:
                    raise conflict(f"Cannot import VM. Disk {disk['name']} is already attached to VM {owner['name']}.")
                attach.append(
                    {
                        "disk_id": d.disk_id,
                        "interface": d.interface,
                        "bootable": d.bootable,
                        "active": d.active,
                        "pass_discard": False,
                        "read_only": False,
                    }
                )
            vm = self._new_vm_from_ovf(parsed, vm_id=vm_id, name=name, cluster=cluster)
            vm["disk_attachments"] = attach
            vm["nics"] = [
                {"id": new_id(), "name": n["name"], "interface": "virtio", "mac": n["mac"]} for n in parsed.nics
            ]
            skipped = len(parsed.disks) - len(attach)
            note = f" ({skipped} disk(s) of the OVF do not exist and were left out)" if skipped else ""
            self.event(f"VM {name} was imported from configuration{note}.", code=9500, vm_id=vm_id)
            self.store.save()
            return vm

    def update_vm(self, vm_id: str, spec) -> dict:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            virtio_scsi = spec.virtio_scsi.enabled if spec.virtio_scsi is not None else None
            if virtio_scsi is False and any(
                a["active"] and a["interface"] == "virtio_scsi" for a in self.vm_attachments(vm)
            ):
                raise conflict(
                    "Cannot disable VirtIO-SCSI when disks with a VirtIO-SCSI interface are plugged into the VM."
                )
            if spec.name is not None and spec.name != vm["name"]:
                self._check_vm_name(spec.name, exclude=vm_id)
                vm["name"] = spec.name
            if spec.description is not None:
                vm["description"] = spec.description
            if spec.memory is not None:
                vm["memory"] = spec.memory
            if spec.cpu and spec.cpu.topology:
                for key in ("sockets", "cores", "threads"):
                    if getattr(spec.cpu.topology, key):
                        vm[key] = getattr(spec.cpu.topology, key)
            if spec.os and spec.os.type:
                vm["os_type"] = spec.os.type
            if spec.cluster is not None:
                vm["cluster_id"] = self.resolve("clusters", spec.cluster)["id"]
            if virtio_scsi is not None:
                vm["virtio_scsi"] = bool(virtio_scsi)
            self.store.save()
            return vm

    def remove_vm(self, vm_id: str, *, detach_only: bool = False) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            disks = [self.store["disks"][a["disk_id"]] for a in vm["disk_attachments"]]
            if detach_only and any(len(d["volumes"]) > 1 for d in disks):
                # RemoveVmCommand.canRemoveVmWithDetachDisks: a disk kept must have no snapshots.
                raise conflict("Cannot remove VM with detaching disks, snapshots exist.")
            # An image_locked VM passes the status check; its locked disks refuse the removal below.
            if vm["status"] not in ("down", "image_locked"):
                raise conflict("Cannot remove VM. VM is running.")
            if any(d["status"] == "locked" for d in disks):
                raise conflict(f"Cannot remove VM: Disk of VM {vm['name']} is locked. Please try again later.")
            if any(s["vm_id"] == vm_id and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(f"Cannot remove VM. Snapshot of VM {vm['name']} is currently being created or removed.")
            if not detach_only:
                self.check_no_snapshots_attached_elsewhere(vm, "remove VM")
            # Removing the VM removes its snapshots (a disk it keeps has none: checked above).
            for snap_id in [s["id"] for s in self.store["snapshots"].values() if s["vm_id"] == vm_id]:
                del self.store["snapshots"][snap_id]
            self.forget_vm_backups(vm_id)
            del self.store["vms"][vm_id]
            self.event(f"VM {vm['name']} was removed by admin@internal-authz.", code=113, vm_id=vm_id)
            self.store.save()
        if vm.get("runs_here"):
            self.publish_proxy_device_dirs({vm["name"]: None})  # no guest of that name runs here any more
        if not detach_only:  # kept disks have a single volume (checked above): nothing to merge
            for disk in disks:
                self.remove_disk(disk["id"])

    def vm_action(self, vm_id: str, action: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if action == "start":
                if vm["status"] == "image_locked":  # being exported, imported or cloned
                    raise conflict("Cannot run VM because the VM is in Image Locked status.")
                if vm["status"] != "down":  # up, or still powering up or down
                    raise conflict(f"Cannot run VM. VM {vm['name']} is running.")
                self.check_not_during_backup(vm, "run VM")
                if any(self.store["disks"][a["disk_id"]]["status"] == "illegal" for a in vm["disk_attachments"]):
                    raise conflict(f"Cannot run VM. VM {vm['name']} has an illegal disk.")
                if any(
                    self.store["disks"][a["disk_id"]]["status"] == "locked"
                    for a in vm["disk_attachments"]
                    if a["active"]
                ):
                    raise conflict(f"Cannot run VM. Disk of VM {vm['name']} is locked. Please try again later.")
                hosts = [
                    h
                    for h in self.store["hosts"].values()
                    if h["cluster_id"] == vm["cluster_id"] and h["status"] == "up"
                ]
                if not hosts:
                    raise conflict(
                        f"Cannot run VM. There is no host that satisfies current scheduling constraints "
                        f"in the cluster of VM {vm['name']}."
                    )
                vm["host_id"] = min(
                    hosts, key=lambda h: sum(1 for v in self.store["vms"].values() if v["host_id"] == h["id"])
                )["id"]
                vm["status"] = "powering_up"
                if self.faults.hang_next_vm_start:
                    self.faults.hang_next_vm_start = False  # stays powering_up, its qemu never started
                else:
                    self._spawn(self._settle_vm, vm_id, "up")
            elif action in ("stop", "shutdown"):
                if vm["status"] in ("down", "image_locked"):
                    raise conflict(f"Cannot stop VM. VM {vm['name']} is not running.")
                if action == "stop":
                    # Powered off at once: its qemu goes with it (cleanly: bitmaps are stored).
                    self.stop_vm_qemu(vm_id)
                    vm["status"], vm["host_id"] = "down", None
                    self._spawn(self.backups_vm_went_down, vm_id)
                else:
                    vm["status"] = "powering_down"
                    self._spawn(self._settle_vm, vm_id, "down")
            else:
                raise bad_request(f"Unknown action {action}")
            self.store.save()

    def crash_vm(self, vm_id: str) -> None:
        """The VM's qemu dies (SIGKILL) and the VM is down: its checkpoint bitmaps are left in use."""
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if vm["status"] == "down":
                raise conflict(f"VM {vm['name']} is not running.")
            self.stop_vm_qemu(vm_id, crash=True)
            vm["status"], vm["host_id"] = "down", None
            self.event(
                f"VM {vm['name']} is down with error. Exit message: qemu process terminated unexpectedly (SIGKILL).",
                severity="error",
                code=119,
                vm_id=vm_id,
            )
            self.store.save()

    def _settle_vm(self, vm_id: str, status: str) -> None:
        time.sleep(self.async_delay * 4)
        error = None
        if status == "up":
            try:
                self.start_vm_qemu(vm_id)
            except qemu.QemuError as e:
                error = e
        else:
            self.stop_vm_qemu(vm_id)
        with self.store.lock:
            vm = self.store["vms"].get(vm_id)
            if vm is None or vm["status"] == "down":  # removed, or powered off meanwhile
                if status == "up" and error is None:
                    self.stop_vm_qemu(vm_id)
                return
            if error is not None:
                self.event(
                    f"VM {vm['name']} is down with error. Exit message: {error}.",
                    severity="error",
                    code=119,
                    vm_id=vm_id,
                )
                status = "down"
            vm["status"] = status
            if status == "down":
                vm["host_id"] = None
            self.store.save()
        if status == "down":
            self.backups_vm_went_down(vm_id)

    # ----- OVF -------------------------------------------------------------------------

    def vm_ovf(self, vm: dict) -> str:
        cluster = self.store["clusters"].get(vm["cluster_id"], {})
        disks = []
        for a in vm["disk_attachments"]:
            disk = self.store["disks"][a["disk_id"]]
            disks.append(
                ovf.OvfDisk(
                    disk_id=disk["id"],
                    volume_id=self.top_volume(disk),
                    alias=disk["name"],
                    description=disk["description"],
                    provisioned_size=disk["provisioned_size"],
                    actual_size=sum(self.store_actual(disk, v["id"]) for v in disk["volumes"]),
                    format=disk["format"],
                    sparse=disk["sparse"],
                    interface=a["interface"],
                    bootable=a["bootable"],
                    active=a["active"],
                    storage_domain_id=disk["sd_id"],
                    backup=disk["backup"],
                )
            )
        return self.ovf_of(vm, cluster, disks)

    @staticmethod
    def ovf_of(vm: dict, cluster: dict, disks: list, snapshots: list | None = None) -> str:
        """The engine's OVF of a VM with these disks (and snapshots, as an export domain holds them)."""
        return ovf.build_ovf(
            ovf.OvfVm(
                id=vm["id"],
                name=vm["name"],
                description=vm["description"],
                memory=vm["memory"],
                sockets=vm["sockets"],
                cores=vm["cores"],
                threads=vm["threads"],
                os_type=vm["os_type"],
                cluster_name=cluster.get("name", ""),
                creation_time=vm["creation_time"],
                disks=disks,
                nics=[{"id": n["id"], "name": n["name"], "mac": n["mac"]} for n in vm["nics"]],
                snapshots=snapshots or [],
            )
        )
