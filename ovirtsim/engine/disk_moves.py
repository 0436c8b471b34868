"""Moving a disk to another storage domain (`POST /disks/{id}/move`), as engine 4.5's MoveDisk does.

A floating disk, or one whose VM is down (or which is unplugged), is moved cold (MoveOrCopyDisk):
the whole chain is copied volume by volume to the target domain (same volume ids, each volume its
own clusters over its copied parent, as vdsm's copy_data), then the source image is removed.

A disk plugged into a running VM is migrated live (LiveMigrateDisk):
1. an automatic live snapshot of that disk only, "<alias> Auto-generated for Live Storage Migration";
2. CloneImageGroupVolumesStructure: the chain's volumes made empty on the target, same ids;
3. VmReplicateDiskStart: the VM's qemu mirrors the new active volume (`blockdev-mirror sync=top`)
   onto the target's active volume, opened without its backing chain (libvirt's shallow copy);
4. SyncImageGroupData: the older volumes copied, each its own data (qemu-img with explicit
   json: specs, never an image header's relative backing reference: sources may be read over nfs://);
5. VmReplicateDiskFinish: the target's chain opened under the mirror's target and `job-complete`:
   the guest's exports follow the target node; the source image is removed;
6. the auto-generated snapshot is removed (a live merge on the target), as 4.5 does; a failure
   there still leaves the move successful (event 2052).
A failure before the pivot cancels the mirror, removes the target image and the auto-generated
snapshot: the disk stays on its source, unlocked, and events say why.

On a block domain (LVM) the target's volumes are LVs made as vdsm makes them (tags, metadata slots),
kept active on the host doing the move (the VM's, else the SPM) until the disk's VM holds them.
"""

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import ovirtsdk4.types as types

from ovirtsim import lvm, qemu, volume_meta
from ovirtsim.engine.core import EngineCore, log
from ovirtsim.errors import EngineFault, bad_request, conflict

USER = "admin@internal-authz"
LSM_SNAPSHOT = "Auto-generated for Live Storage Migration"  # StorageConstants.LSM_AUTO_GENERATED_...
MOVING, MOVED, MOVE_FAILED, MOVED_WITH_LEFTOVERS = 2008, 2010, 2011, 2052
VDS_BROKER_COMMAND_FAILURE = 10802


@dataclass
class _Target:
    """The disk's image being made on the target domain."""

    sd_id: str
    view: dict  # the disk's record as it will be there (its volumes' LV slots and tags on a block domain)
    paths: list[Path]  # each volume's file, or its LV's device node on the host doing the move
    holder: str | None  # a block domain: who keeps the LVs active meanwhile
    size: int | None = None  # a block domain: a RAW LV's guest-visible size (the LV is longer)


class MoveFailed(Exception):
    """A step of a move failed: `command` is the vdsm verb that failed, for the event."""

    def __init__(self, command: str, reason: str):
        super().__init__(reason)
        self.command = command


class DiskMoves(EngineCore):
    def move_disk(self, disk_id: str, action) -> dict:
        """Validate and start a move (MoveDisk); returns its job. The disk is locked until it ends."""
        with self.store.lock:
            disk = self.get("disks", disk_id)
            if action.storage_domain is None or not (action.storage_domain.id or action.storage_domain.name):
                raise bad_request("Action [storageDomain.id|name] required for move")
            ref = action.storage_domain
            target = (
                self.store["storagedomains"].get(ref.id) if ref.id else self.find_by_name("storagedomains", ref.name)
            )
            vm = self.vm_of_disk(disk_id)
            attachment = next((a for a in vm["disk_attachments"] if a["disk_id"] == disk_id), None) if vm else None
            live = vm is not None and vm["status"] != "down" and bool(attachment and attachment["active"])
            self._validate_move(disk, target, vm if live else None)
            source = self.store["storagedomains"][disk["sd_id"]]
            if live:
                what = f"Migrating Disk {disk['name']} from {source['name']} to {target['name']} of VM {vm['name']}"
            else:
                what = f"Moving Disk {disk['name']} from {source['name']} to {target['name']}"
            job_id = self._job(what)
            job = self.store["jobs"][job_id]
            job["steps"] = []
            self._end_step(job, self._step(job, "validating", "Validating"))
            executing = self._step(job, "executing", "Executing")
            disk["status"] = "locked"
            self.event(f"User {USER} moving disk {disk['name']} to domain {target['name']}.", code=MOVING)
            self.store.save()
        self._spawn(self._run_move, job_id, executing, disk_id, source["id"], target["id"], vm["id"] if live else None)
        return job

    def _validate_move(self, disk: dict, target: dict | None, live_vm: dict | None) -> None:
        """MoveDisk's, MoveOrCopyDisk's and LiveMigrateDisk's validations, in their order and words."""
        what = "Cannot move Virtual Disk."
        if disk["status"] == "locked":
            raise conflict(f"{what} Disk {disk['name']} is being moved or copied.")
        if disk["status"] == "illegal":
            raise conflict(
                f"{what} The following attached disks are in ILLEGAL status: {disk['name']} - please remove them "
                "and try again."
            )
        source = self.store["storagedomains"][disk["sd_id"]]
        if target is not None and target["id"] == source["id"]:
            raise conflict(f"{what} The source and target storage domains are the same.")
        if self.domain_status(source) != "active":
            raise conflict(f"{what} The relevant Storage Domain's status is {self.domain_status(source).capitalize()}.")
        # The target is looked up in the disk's data center: one elsewhere does not exist for it.
        if target is None or target.get("dc_id") != source.get("dc_id"):
            raise conflict(f"{what} Storage Domain doesn't exist.")
        if self.domain_status(target) != "active":
            raise conflict(f"{what} The relevant Storage Domain's status is {self.domain_status(target).capitalize()}.")
        if target["type"] != "data":
            raise conflict(f"{what} Storage Domain type is illegal.")
        if disk["shareable"] and target["storage_type"] == "glusterfs":
            raise conflict(f"{what} {disk['name']} is shareable, which Gluster domains do not support.")
        if disk["shareable"] and target["block"] and disk["sparse"]:
            raise conflict(
                f"{what} {disk['name']} is a thin provisioned shareable disk, which is not supported for "
                "block-based domains."
            )
        if self._move_space_needed(disk) > self.storage_usage(target)[0] or self.faults.move_target_full:
            raise conflict(f"{what} Low disk space on Storage Domain {target['name']}.")
        # Another VM running with a snapshot of this disk attached (a backup proxy) blocks the move.
        using = sorted(
            vm["name"]
            for vm in self.store["vms"].values()
            for a in vm.get("snapshot_attachments", [])
            if a["disk_id"] == disk["id"] and a["active"] and vm["status"] != "down"
        )
        if using:
            raise conflict(f"{what} The disk {disk['name']} is plugged to non-Down VMs: {','.join(using)}")
        if live_vm is not None:
            if live_vm["status"] not in ("up", "paused"):
                raise conflict(f"{what} The Virtual Machine should be either in Up or Paused status.")
            if disk["shareable"]:
                raise conflict(
                    f"Cannot move a shareable Virtual Disk ({disk['name']}). This operation is not supported."
                )
            self.check_not_during_backup(live_vm, "move Virtual Disk")
            # The auto-generated snapshot's own validation (CreateSnapshotForVm), in its words.
            if any(s["vm_id"] == live_vm["id"] and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(f"Cannot create Snapshot. Snapshot is currently being created for VM {live_vm['name']}.")
        if target.get("lvm") and disk["sparse"] and disk["volumes"][0]["format"] == "raw":
            # An LV has no holes: vdsm makes no RAW thin volume on a block domain (what the engine's
            # disk configuration check says when such a disk is added there).
            raise conflict(
                f"{what} Disk configuration (RAW Sparse backup-{disk['backup'].capitalize()}) is incompatible "
                "with the storage domain type."
            )

    def _move_space_needed(self, disk: dict) -> int:
        """What the copy takes on the target: every volume's allocation, a preallocated base in full."""
        needed = sum(self.store_actual(disk, v["id"]) for v in disk["volumes"][1:])
        return needed + (
            self.store_actual(disk, disk["volumes"][0]["id"]) if disk["sparse"] else disk["provisioned_size"]
        )

    # ----- the move ----------------------------------------------------------------------------

    def _run_move(self, job_id: str, executing: str, disk_id: str, source_id: str, target_id: str, vm_id) -> None:
        time.sleep(self.async_delay)
        leftovers = False
        try:
            if vm_id is None:
                self._cold_move(job_id, executing, disk_id, source_id, target_id)
            else:
                leftovers = self._live_move(job_id, executing, disk_id, source_id, target_id, vm_id)
            error = None
        except (MoveFailed, qemu.QemuError, lvm.LvmError, OSError) as e:
            error = e
            log.warning("moving disk %s failed: %s", disk_id, e)
        except Exception as e:  # a bug of ours: the job still ends and the disk is unlocked
            error = e
            log.exception("moving disk %s failed", disk_id)
        with self.store.lock:
            disk = self.store["disks"].get(disk_id)
            job = self.store["jobs"][job_id]
            self._end_step(job, executing, error is None)
            self._end_step(job, self._step(job, "finalizing", "Finalizing"))
            target = self.store["storagedomains"][target_id]
            name = disk["name"] if disk else disk_id
            if disk is not None:
                self._unlock_disk(disk_id)
            if error is not None:
                host = self.store["hosts"].get((self.store["vms"].get(vm_id or "") or {}).get("host_id") or "")
                host = host or self.store["hosts"].get(self.spm_host_id()) or {"name": "host"}
                command = getattr(error, "command", "CopyImageGroupVolumesData")
                self.event(
                    f"VDSM {host['name']} command {command} failed: {error}",
                    severity="error",
                    code=VDS_BROKER_COMMAND_FAILURE,
                )
                self.event(
                    f"User {USER} has failed to move disk {name} to domain {target['name']}.",
                    severity="error",
                    code=MOVE_FAILED,
                )
            elif leftovers:
                self.event(
                    f"Failed to perform live merge, disk {name} migration to storage domain {target['name']} "
                    "was successful.",
                    severity="warning",
                    code=MOVED_WITH_LEFTOVERS,
                )
            else:
                self.event(f"User {USER} finished moving disk {name} to domain {target['name']}.", code=MOVED)
            self._end_job(job_id, error is None)
            self.store.save()

    def _target_dir(self, target_id: str, disk_id: str) -> Path:
        return Path(self.store["storagedomains"][target_id]["path"]) / "images" / disk_id

    def _target_file(self, path: Path, *, mirror: bool = False) -> dict:
        """The protocol node qemu writes a target volume through (with the fault: every write fails ENOSPC)."""
        spec = qemu.protocol(path)
        if self.faults.move_target_enospc or (mirror and self.faults.move_mirror_enospc):
            return {"driver": "blkdebug", "image": spec, "inject-error": [{"event": "pwritev", "errno": 28}]}
        return spec

    def _source_chain(self, disk: dict, host_id: str | None) -> list[tuple[dict, str, int | None]]:
        """(protocol spec, qemu format, size for a RAW LV) per source volume, base first."""
        size = disk["provisioned_size"] if self.on_lvm(disk) else None
        return [
            (
                qemu.protocol(self.volume_path(disk, v["id"], host_id=host_id)),
                "qcow2" if v["format"] == "cow" else "raw",
                size,
            )
            for v in disk["volumes"]
        ]

    def _clone_structure(self, disk: dict, target_id: str, host_id: str) -> "_Target":
        """CloneImageGroupVolumesStructure: the chain's volumes, empty, on the target (same ids): files, or
        LVs (as vdsm makes them, with their metadata slots) kept active on `host_id` for the move."""
        view = {
            **disk,
            "sd_id": target_id,
            "volumes": [{"id": v["id"], "format": v["format"]} for v in disk["volumes"]],
        }
        sd = self.store["storagedomains"][target_id]
        target = _Target(target_id, view, [], f"move:{disk['id']}" if sd.get("lvm") else None)
        try:
            if target.holder:
                for index, volume in enumerate(view["volumes"]):
                    self._create_lv_volume(view, volume, backing_id=view["volumes"][index - 1]["id"] if index else None)
                    target.paths.append(self.lvm.activate(host_id, target_id, volume["id"], holder=target.holder))
                    target.size = disk["provisioned_size"]
                return target
            image_dir = self._target_dir(target_id, disk["id"])
            if image_dir.exists():
                raise MoveFailed("CloneImageGroupVolumesStructureVDS", f"image {disk['id']} exists on the target")
            for index, volume in enumerate(disk["volumes"]):
                target.paths.append(image_dir / volume["id"])
                qemu.create(
                    target.paths[-1],
                    fmt="qcow2" if volume["format"] == "cow" else "raw",
                    size=disk["provisioned_size"],
                    backing=target.paths[-2] if index else None,
                    preallocate=index == 0 and not disk["sparse"],
                )
        except (qemu.QemuError, lvm.LvmError) as e:
            self._drop_target(target)
            raise MoveFailed("CloneImageGroupVolumesStructureVDS", str(e)) from None
        return target

    def _drop_target(self, target: "_Target") -> None:
        """The target image removed again (a move that failed): its files, or its LVs and their slots."""
        if target.holder is None:
            shutil.rmtree(self._target_dir(target.sd_id, target.view["id"]), ignore_errors=True)
            return
        self.lvm.release_holder(target.holder)
        for volume in reversed(target.view["volumes"]):
            if volume.get("md_slot") is not None:
                self._remove_lv_volume(target.view, volume)

    def _copy_volumes(self, chain: list, target: "_Target", count: int, job_id: str, step: str) -> None:
        """vdsm's copy_data for the first `count` volumes: each volume's own clusters into its target,
        read through an explicit json: chain, written over the already copied parent (not flattened)."""
        for index in range(count):
            source = None
            for file_spec, fmt, size in chain[: index + 1]:
                node = {"driver": fmt, "file": file_spec}
                if fmt == "qcow2":
                    node["backing"] = source
                elif size is not None:
                    node["size"] = size
                source = node
            fmt, paths = chain[index][1], target.paths
            dest = {"driver": fmt, "file": self._target_file(paths[index])}
            if fmt == "qcow2":
                dest["backing"] = None
            elif target.size is not None:
                dest["size"] = target.size  # a RAW LV is longer than the disk
            args = ["qemu-img", "convert", "-q", "-n"]
            if self.faults.move_speed:  # a slow storage, as the mirror's speed (in order: -W defeats -r)
                args += ["-r", str(self.faults.move_speed)]
            else:
                args.append("-W")
            if index:  # only this layer's clusters: the rest is its parent's, copied already
                args += ["-B", os.path.relpath(paths[index - 1], paths[index].parent), "-F", chain[index - 1][1]]
            if fmt == "qcow2" and chain[index][1] == "qcow2":
                args += ["--bitmaps", "--skip-broken-bitmaps"]  # checkpoints go along, as vdsm copies them
            args += ["json:" + json.dumps(source), "-O", fmt, "json:" + json.dumps(dest)]
            try:
                qemu.run(*args)
            except qemu.QemuError as e:
                raise MoveFailed("CopyImageGroupVolumesDataVDS", str(e).split(" failed: ")[-1]) from None
            self._set_step_progress(job_id, step, 100 * (index + 1) // max(count, 1))

    def _cold_move(self, job_id: str, executing: str, disk_id: str, source_id: str, target_id: str) -> None:
        with self.store.lock:
            disk = self.store["disks"][disk_id]
        step = self._sub_step(job_id, executing, "Moving Image")
        target = None
        try:
            with self.store.lock:
                host_id = self.lv_host(disk)
            with self._volume_locks[disk_id], self.prepared(disk, host_id=host_id):
                with self.store.lock:
                    chain = self._source_chain(disk, host_id)
                target = self._clone_structure(disk, target_id, host_id)
                self._copy_volumes(chain, target, len(chain), job_id, step)
        except BaseException:
            self._close_step(job_id, step, False)
            if target is not None:
                self._drop_target(target)
            raise
        source_view = self._move_record(disk, target)
        self._settle_activation(disk, target)
        self._remove_source(disk, source_view)
        self._close_step(job_id, step)

    def _move_record(self, disk: dict, target: "_Target") -> dict:
        """The disk is on the target from now on (its `.meta` or metadata slots written there); returns
        the record as it was on the source, for the source's removal or a rollback."""
        with self.store.lock:
            source_view = {**disk, "volumes": [dict(v) for v in disk["volumes"]]}
            disk["sd_id"], disk["volumes"] = target.sd_id, [dict(v) for v in target.view["volumes"]]
            self.store.save()
        volume_meta.write_disk_meta(self, disk)
        self.sync_block_metadata(disk)  # the leaf and its parents, as on the source
        return source_view

    def _settle_activation(self, disk: dict, target: "_Target") -> None:
        """Once the guest is on the target: its VM holds the disk's LVs where they are now (and the
        source's no more); the move's own activation of the target's LVs ends."""
        vm = self.vm_of_disk(disk["id"])
        if vm is not None and vm["id"] in self.vm_qemus:
            self.sync_vm_activation(vm["id"])
        if target.holder:
            self.lvm.release_holder(target.holder)

    def _restore_record(self, disk: dict, source_view: dict) -> None:
        with self.store.lock:
            disk["sd_id"], disk["volumes"] = source_view["sd_id"], source_view["volumes"]
            self.store.save()

    def _remove_source(self, disk: dict, source_view: dict) -> None:
        """DeleteImageGroup on the source domain."""
        source = self.store["storagedomains"][source_view["sd_id"]]
        if source.get("lvm"):
            for volume in reversed(source_view["volumes"]):
                self._remove_lv_volume(source_view, volume)
        else:
            shutil.rmtree(Path(source["path"]) / "images" / disk["id"], ignore_errors=True)

    # ----- live storage migration --------------------------------------------------------------

    def _live_move(self, job_id: str, executing: str, disk_id: str, source_id: str, target_id: str, vm_id: str) -> bool:
        """LiveMigrateDisk; returns True when only the auto-generated snapshot's removal failed."""
        with self.store.lock:
            disk = self.store["disks"][disk_id]
            vm = self.store["vms"][vm_id]
            description = f"{disk['name']} {LSM_SNAPSHOT}"
            disk["status"] = "ok"  # CreateSnapshotForVm locks it again at once, under this lock
            attachment = types.DiskAttachment(disk=types.Disk(id=disk_id))
            try:
                snap = self.add_snapshot(vm_id, types.Snapshot(description=description, disk_attachments=[attachment]))
            except EngineFault as e:
                raise MoveFailed("CreateSnapshotForVm", e.detail.strip("[]")) from None
        snap_id = snap["id"]
        if not self._wait_snapshot(snap_id, created=True):
            raise MoveFailed("SnapshotVDS", f"the live snapshot '{description}' failed")
        with self.store.lock:
            disk["status"] = "locked"
        vm_qemu = self.qemu_of_disk(disk_id)
        target = mirror = None
        try:
            if vm_qemu is None:
                raise MoveFailed("VmReplicateDiskStartVDS", f"VM {vm['name']} is not running")
            step = self._sub_step(job_id, executing, "Cloning image's structure")
            # No volume lock: the guest writes on meanwhile (the disk is locked against other commands).
            with self.store.lock:
                host_id = vm.get("host_id") or self.lv_host(disk)
                chain = self._source_chain(disk, host_id if self.on_lvm(disk) else None)
            target = self._clone_structure(disk, target_id, host_id)
            paths = target.paths
            self._close_step(job_id, step)
            step = self._sub_step(job_id, executing, "Synchronizing image data")
            try:
                top = self._target_file(paths[-1], mirror=True)
                mirror = vm_qemu.start_mirror(disk_id, paths[-1], top, speed=self.faults.move_speed)
            except qemu.QemuError as e:
                raise MoveFailed("VmReplicateDiskStartVDS", str(e)) from None
            self._copy_volumes(chain, target, len(chain) - 1, job_id, step)
            self._wait_mirror(vm_qemu, mirror, job_id, step)
            # As the engine, the disk's record moves before the pivot, and moves back if it fails.
            source_view = self._move_record(disk, target)
            try:
                older = [(p.name, p, qemu.protocol(p), fmt) for p, (_, fmt, _) in zip(paths[:-1], chain, strict=False)]
                vm_qemu.pivot_mirror(disk_id, mirror, older)
            except qemu.QemuError as e:
                self._restore_record(disk, source_view)
                raise MoveFailed("VmReplicateDiskFinishVDS", str(e)) from None
            mirror = None
            self._close_step(job_id, step)
        except BaseException:
            if mirror is not None:
                try:
                    vm_qemu.cancel_mirror(mirror)
                except qemu.QemuError:
                    log.exception("cancelling the mirror of disk %s failed", disk_id)
            if target is not None:
                self._drop_target(target)
            self._remove_lsm_snapshot(disk_id, vm_id, snap_id)
            raise
        # Pivoted: the guest runs on the target, whatever happens from here on.
        self._settle_activation(disk, target)
        self._remove_source(disk, source_view)
        return not self._remove_lsm_snapshot(disk_id, vm_id, snap_id, job_id=job_id, parent=executing)

    def _wait_mirror(self, vm_qemu, job: str, job_id: str, step: str) -> None:
        while True:
            state = vm_qemu.mirror_state(job)
            if state["error"] or state["status"] in ("concluded", "gone"):
                raise MoveFailed("VmReplicateDiskStartVDS", state["error"] or "the mirror ended before the pivot")
            if state["total"]:
                self._set_step_progress(job_id, step, min(99, 100 * state["done"] // state["total"]))
            if state["status"] == "ready" and not self.faults.hold_move_pivot:
                return
            time.sleep(0.05)

    def _wait_snapshot(self, snap_id: str, *, created: bool, timeout: float = 600) -> bool:
        """Whether the snapshot's creation (or removal) succeeded, once it ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.lock:
                snap = self.store["snapshots"].get(snap_id)
                if snap is None or snap.get("type") == "active":
                    return not created
                if snap["status"] != "locked":
                    return created
            time.sleep(0.05)
        return False

    def _remove_lsm_snapshot(self, disk_id: str, vm_id: str, snap_id: str, *, job_id=None, parent=None) -> bool:
        """Remove the auto-generated snapshot (a live merge while the VM runs); whether it went."""
        with self.store.lock:
            snap = self.store["snapshots"].get(snap_id)
            if snap is None or snap.get("type") == "active":
                return True
            self._unlock_disk(disk_id)  # RemoveSnapshot locks it again
            step = self._step(self.store["jobs"][job_id], "unknown", "Merging snapshots", parent) if job_id else None
        try:
            self.remove_snapshot(vm_id, snap_id)
            ok = self._wait_snapshot(snap_id, created=False)
        except EngineFault as e:
            log.warning("removing the auto-generated snapshot of disk %s failed: %s", disk_id, e.detail)
            ok = False
        with self.store.lock:
            disk = self.store["disks"].get(disk_id)
            if disk is not None and disk["status"] == "ok":
                disk["status"] = "locked"  # until the move's end unlocks it
            if step:
                self._end_step(self.store["jobs"][job_id], step, ok)
        return ok
