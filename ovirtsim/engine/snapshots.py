"""Snapshots: created as real qcow2 layers, removed by merging them; disk snapshots (volumes)."""

import logging
import time

from ovirtsim import lvm, qemu, volume_meta
from ovirtsim.engine.core import EngineCore, new_id, now_iso
from ovirtsim.errors import bad_request, conflict, not_found

log = logging.getLogger("ovirtsim")

# vdsm fails the live snapshot when the guest's freeze does not return; the engine logs event 170
# (USER_CREATE_LIVE_SNAPSHOT_FINISHED_FAILURE, with vdsm's error translated: freezeErr) and then
# fails the whole snapshot with event 69, which names no cause.
FREEZE_TIMEOUT = "Unable to freeze guest filesystems"


class Snapshots(EngineCore):
    def vm_snapshots(self, vm_id: str) -> list[dict]:
        self.get("vms", vm_id)
        return sorted(
            (s for s in self.store["snapshots"].values() if s["vm_id"] == vm_id),
            key=lambda s: (s["type"] != "active", s["date"]),
        )

    def add_snapshot(self, vm_id: str, spec, *, require_consistency: bool = False) -> dict:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            self.check_not_during_backup(vm, "create Snapshot")
            if any(s["vm_id"] == vm_id and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(f"Cannot create Snapshot. Snapshot is currently being created for VM {vm['name']}.")
            if spec.disk_attachments is not None:
                wanted = [a.disk.id if a.disk else a.id for a in spec.disk_attachments]
                attached = {a["disk_id"] for a in vm["disk_attachments"]}
                for disk_id in wanted:
                    if disk_id not in attached:
                        raise bad_request(f"Cannot create Snapshot. Disk {disk_id} is not attached to VM {vm['name']}.")
            else:
                wanted = [a["disk_id"] for a in vm["disk_attachments"]]
            disks = [self.store["disks"][d] for d in wanted]
            for disk in disks:
                if disk["status"] != "ok":
                    raise conflict(
                        f"Cannot create Snapshot. Disk {disk['name']} is {disk['status']}. Please try again later."
                        if disk["status"] == "locked"
                        else f"Cannot create Snapshot. Disk {disk['name']} is {disk['status']}."
                    )
            running = vm["status"] in ("up", "powering_up", "powering_down")
            if running and require_consistency and not vm["guest_agent"]:
                raise conflict(
                    f"Cannot create Snapshot. Failed to freeze guest filesystems on VM {vm['name']}: the "
                    "guest agent is not running. Take the snapshot without requiring consistency, or "
                    "install the guest agent."
                )
            # As the engine does (CreateSnapshotForVmCommand.updateActiveSnapshotId): the new snapshot
            # takes the Active VM snapshot's id and the Active VM a new one; a creation that fails
            # gives the id back, so a client polling it then reads the Active VM, status ok.
            snap_id = self._take_active_snapshot_id(vm)
            # The guest's freeze that hangs past vdsm's freeze timeout fails the live snapshot job.
            freeze_hangs = running and require_consistency and vm.get("guest_freeze_hangs", False)
            snap = {
                "id": snap_id,
                "vm_id": vm_id,
                "description": spec.description or "",
                "type": "regular",
                "status": "locked",
                "date": now_iso(),
                "persist_memorystate": bool(spec.persist_memorystate)
                if spec.persist_memorystate is not None
                else running,
                "volumes": {d["id"]: self.top_volume(d) for d in disks},
                "ovf": self.vm_ovf(vm),
            }
            new_volumes = {d["id"]: new_id() for d in disks}
            for disk in disks:
                disk["status"] = "locked"
            self.store["snapshots"][snap_id] = snap
            job_id = self._job(f"Creating VM Snapshot {snap['description']} for VM {vm['name']}")
            fail = "simulated failure (fault switch fail_next_snapshot)" if self.faults.fail_next_snapshot else ""
            if freeze_hangs:
                fail = FREEZE_TIMEOUT
            self.faults.fail_next_snapshot = False
            self.store.save()
        self._spawn(self._create_snapshot_layers, snap_id, new_volumes, fail, job_id)
        return snap

    def _take_active_snapshot_id(self, vm: dict) -> str:
        """The Active VM snapshot's id, for a new snapshot; the Active VM gets a new one."""
        snapshots = self.store["snapshots"]
        active = snapshots.pop(vm.get("active_snapshot_id", ""), None)
        if active is None:
            return new_id()
        taken = active["id"]
        active["id"] = vm["active_snapshot_id"] = new_id()
        snapshots[active["id"]] = active
        return taken

    def _give_back_active_snapshot_id(self, vm: dict, snap_id: str) -> None:
        """A snapshot that failed: gone, and the Active VM snapshot has its id again."""
        snapshots = self.store["snapshots"]
        del snapshots[snap_id]
        active = snapshots.pop(vm.get("active_snapshot_id", ""), None)
        if active is not None:
            active["id"] = vm["active_snapshot_id"] = snap_id
            snapshots[snap_id] = active

    def _create_snapshot_layers(self, snap_id: str, new_volumes: dict[str, str], fail: str, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            snap = self.store["snapshots"][snap_id]
            vm = self.store["vms"][snap["vm_id"]]
            disks = [self.store["disks"][d] for d in new_volumes]
        created = []
        live = []  # (VmQemu, disk, old top) for the layers a running VM's qemu took
        try:
            if fail:
                raise qemu.QemuError(fail)
            for disk in disks:
                top_id = self.top_volume(disk)
                volume_id = new_volumes[disk["id"]]
                vm_qemu = self.qemu_of_disk(disk["id"])
                if self.on_lvm(disk):
                    volume = {"id": volume_id, "format": "cow"}
                    self._create_lv_volume(disk, volume, backing_id=top_id)
                    created.append((disk, volume))
                    host_id = self.lv_host(disk)
                    if vm_qemu is not None:
                        # The VM's qemu opens the new layer: active on its host from now on.
                        self.lvm.activate(host_id, disk["sd_id"], volume_id, holder=f"vm:{vm['id']}")
                        vm_qemu.snapshot(disk["id"], volume_id, self.volume_path(disk, volume_id, host_id=host_id))
                        live.append((vm_qemu, disk, top_id))
                    elif disk["volumes"][-1]["format"] == "cow":
                        with self.prepared(disk, [*self.chain_up_to(disk), volume_id], host_id=host_id):
                            self._carry_bitmaps(
                                self.volume_path(disk, top_id, host_id=host_id),
                                self.volume_path(disk, volume_id, host_id=host_id),
                            )
                    continue
                top = self.volume_path(disk, top_id)
                path = self.volume_path(disk, volume_id)
                qemu.create(path, fmt="qcow2", size=disk["provisioned_size"], backing=top)
                self.own_on_share(disk, path)  # an NFS data domain's: its qemu opens it over NFS
                created.append((disk, path))
                if vm_qemu is not None:
                    vm_qemu.snapshot(disk["id"], volume_id, path)
                    live.append((vm_qemu, disk, top_id))
                elif disk["volumes"][-1]["format"] == "cow":
                    self._carry_bitmaps(top, path)
        except (qemu.QemuError, lvm.LvmError) as e:
            held = set()
            for vm_qemu, disk, top_id in live:
                try:  # the new layers go away again: merged back, empty but for writes meanwhile
                    vm_qemu.commit(disk["id"], new_volumes[disk["id"]], top_id)
                except qemu.QemuError:
                    log.exception("undoing the live snapshot of disk %s failed", disk["id"])
                    held.add(disk["id"])
            for disk, made in created:
                if disk["id"] in held:
                    continue
                if isinstance(made, dict):
                    self._remove_lv_volume(disk, made)
                else:
                    made.unlink(missing_ok=True)
            with self.store.lock:
                # The events first: a client that sees the snapshot gone reads why at once, as on the engine.
                cause = f": {e}"  # the simulator's own failures name their cause, for its tests
                if str(e) == FREEZE_TIMEOUT:
                    self.event(
                        f"Failed to create live snapshot '{snap['description']}' for VM '{vm['name']}' due to: "
                        f"{FREEZE_TIMEOUT}. VM restart is recommended. Note that using the created snapshot "
                        "might cause data inconsistency.",
                        severity="warning",
                        code=170,
                        vm_id=vm["id"],
                    )
                    cause = ""  # the engine's own text (USER_CREATE_SNAPSHOT_FINISHED_FAILURE)
                self.event(
                    f"Failed to complete snapshot '{snap['description']}' creation for VM '{vm['name']}'{cause}.",
                    severity="error",
                    code=69,
                    vm_id=vm["id"],
                )
                self._give_back_active_snapshot_id(vm, snap_id)
                for disk in disks:
                    disk["status"] = "ok"
                self._end_job(job_id, False)
                self.store.save()
            return
        with self.store.lock:
            self.event(
                f"Snapshot '{snap['description']}' creation for VM '{vm['name']}' has been completed.",
                code=68,
                vm_id=vm["id"],
            )
            made = {d["id"]: v for d, v in created if isinstance(v, dict)}
            for disk in disks:
                disk["volumes"].append(made.get(disk["id"]) or {"id": new_volumes[disk["id"]], "format": "cow"})
                self.refresh_disk_format(disk)
                volume_meta.write_disk_meta(self, disk)
            self.store.save()
        # The snapshot is OK only once the storage says so, as vdsm's createVolume task ends after the
        # old leaf's metadata reads INTERNAL and the VM's qemu has its new active volumes: a client
        # that sees OK and reads the volumes at once finds them done.
        for disk in disks:
            self.sync_block_metadata(disk)  # the old leaf is INTERNAL now
        if vm["status"] != "down":
            self.sync_vm_activation(vm["id"])  # the VM's qemu opens its new active volumes
        with self.store.lock:
            for disk in disks:
                disk["status"] = "ok"
            snap["status"] = "ok"
            self._end_job(job_id, True)
            self.store.save()

    @staticmethod
    def _carry_bitmaps(top, path) -> None:
        # As vdsm does for a VM that is down: the checkpoints go on in the new layer.
        for bitmap in qemu.bitmaps(top):
            if "auto" in bitmap["flags"] and "in-use" not in bitmap["flags"]:
                qemu.add_bitmap(path, bitmap["name"])

    def remove_snapshot(self, vm_id: str, snap_id: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            snap = self.get("snapshots", snap_id)
            if snap["vm_id"] != vm_id:
                raise not_found("snapshots", snap_id)
            if snap["type"] == "active":
                raise conflict("Cannot remove Snapshot. The active snapshot of a VM cannot be removed.")
            self.check_not_during_backup(vm, "remove Snapshot")
            if snap["status"] == "locked":
                raise conflict(
                    f"Cannot remove Snapshot. Snapshot is currently being created or removed for VM {vm['name']}."
                )
            # Any of the VM's disk snapshots attached to another VM (a backup proxy) blocks every merge.
            self.check_no_snapshots_attached_elsewhere(vm, "remove Snapshot")
            disks = [self.store["disks"][d] for d in snap["volumes"] if d in self.store["disks"]]
            for disk in disks:
                if disk["status"] == "locked":
                    raise conflict(f"Cannot remove Snapshot. Disk {disk['name']} is locked. Please try again later.")
            snap["status"] = "locked"
            for disk in disks:
                disk["status"] = "locked"
            job_id = self._job(f"Removing Snapshot {snap['description']} of VM {vm['name']}")
            self.store.save()
        self._spawn(self._merge_snapshot, snap_id, job_id)

    def _merge_snapshot(self, snap_id: str, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            snap = self.store["snapshots"][snap_id]
            vm = self.store["vms"][snap["vm_id"]]
            disks = [self.store["disks"][d] for d in snap["volumes"] if d in self.store["disks"]]
        failed = None
        for disk in disks:
            with self.store.lock:
                volume_id = snap["volumes"][disk["id"]]
                index = next(i for i, v in enumerate(disk["volumes"]) if v["id"] == volume_id)
            try:
                if index + 1 < len(disk["volumes"]):
                    self._merge_volume(disk, index + 1, removed=snap)
            except qemu.QemuError as e:
                failed = e
                with self.store.lock:
                    disk["status"] = "illegal"
                continue
            with self.store.lock:
                self.refresh_disk_format(disk)
                disk["status"] = "ok"
        with self.store.lock:
            if failed:
                self.event(
                    f"Failed to delete snapshot '{snap['description']}' for VM '{vm['name']}': {failed}",
                    severity="error",
                    code=357,
                    vm_id=vm["id"],
                )
                snap["status"] = "ok"
                self._end_job(job_id, False)
            else:
                self.event(
                    f"Snapshot '{snap['description']}' deletion for VM '{vm['name']}' has been completed.",
                    code=356,
                    vm_id=vm["id"],
                )
                del self.store["snapshots"][snap_id]
                self._end_job(job_id, True)
            self.store.save()

    # ----- disk snapshots --------------------------------------------------------------

    def disk_snapshot(self, volume_id: str) -> tuple[dict, dict, dict | None]:
        """(disk, volume, snapshot) for a disk snapshot id, which is a volume id."""
        for disk in self.store["disks"].values():
            for vol in disk["volumes"]:
                if vol["id"] == volume_id:
                    return disk, vol, self.snapshot_of_volume(disk, volume_id)
        raise not_found("disksnapshots", volume_id)

    def snapshot_of_volume(self, disk: dict, volume_id: str) -> dict | None:
        """The regular snapshot whose image of `disk` is this volume (None for the active one)."""
        return next(
            (
                s
                for s in self.store["snapshots"].values()
                if s["type"] == "regular" and s["volumes"].get(disk["id"]) == volume_id
            ),
            None,
        )
