"""VM backups and checkpoints, as engine 4.5 runs them (StartVmBackup, StopVmBackup, DeleteVmCheckpoint).

A backup locks its disks, creates a checkpoint (a persistent dirty bitmap named by the checkpoint
id in each QCOW2 disk with incremental backup enabled) and becomes `ready`; the client downloads
each disk with an image transfer that names the backup, then finalizes it.

- A VM that is down (cold backup): the bitmaps are added with qemu-img when the backup starts;
  each image transfer starts its own qemu-nbd over the disk's chain, with `--bitmap` for an
  incremental disk (the bitmap merged from every layer into a transient overlay, as vdsm does).
- A running VM (live backup): its qemu (`ovirtsim.vm_qemu.VmQemu`) makes the point-in-time view
  (scratch overlay + copy-before-write) and the NBD exports; the transfers serve those exports.
  The from-checkpoint's bitmaps are validated first (libvirt's checkpoint redefinition): a missing
  or inconsistent one fails the backup and the engine drops the VM's checkpoint chain, saying a
  full backup is now needed.
"""

import datetime
import logging
import shutil
import time
from pathlib import Path

from ovirtsim import qemu
from ovirtsim.engine.core import FINAL_PHASES, EngineCore, new_id, now_iso
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found

log = logging.getLogger("ovirtsim")

USER = "admin@internal-authz"
ACTIVE_BACKUP_PHASES = {"initializing", "starting", "ready", "finalizing"}
FINAL_BACKUP_PHASES = {"succeeded", "failed"}

# The engine's audit log codes (AuditLogType).
VM_BACKUP_STARTED = 10790
VM_INCREMENTAL_BACKUP_FAILED_FULL_VM_BACKUP_NEEDED = 10791
VM_BACKUP_FAILED = 10792
VM_BACKUP_SUCCEEDED = 10793
VM_BACKUP_FINALIZED = 10794
VM_BACKUP_FAILED_TO_FINALIZE = 10795
VM_CHECKPOINT_DELETED = 10797
VM_CHECKPOINT_FAILED_TO_DELETE = 10798
VM_BACKUP_FAILED_UNMONITORED = 10814
VDS_BROKER_COMMAND_FAILURE = 10802


class _FullBackupNeeded(Exception):
    pass


class Backups(EngineCore):
    def recover(self) -> None:
        super().recover()
        self.recover_backups()

    def start_monitor(self) -> None:
        super().start_monitor()
        self._spawn(self._monitor_backups)

    def _monitor_backups(self) -> None:
        while not self._stopping.wait(1):
            self.forget_old_backups()

    # ----- lookups ---------------------------------------------------------------------

    def vm_backups(self, vm_id: str) -> list[dict]:
        self.get("vms", vm_id)
        return sorted(
            (b for b in self.store["backups"].values() if b["vm_id"] == vm_id), key=lambda b: b["creation_date"]
        )

    def vm_backup(self, vm_id: str, backup_id: str) -> dict:
        self.get("vms", vm_id)
        backup = self.store["backups"].get(backup_id)
        if backup is None or backup["vm_id"] != vm_id:
            raise not_found("backups", backup_id)
        return backup

    def vm_checkpoints(self, vm_id: str) -> list[dict]:
        """The VM's checkpoint chain, root (oldest) first."""
        self.get("vms", vm_id)
        return sorted(
            (c for c in self.store["checkpoints"].values() if c["vm_id"] == vm_id),
            key=lambda c: (c["creation_date"], c["seq"]),
        )

    def vm_checkpoint(self, vm_id: str, checkpoint_id: str) -> dict:
        self.get("vms", vm_id)
        checkpoint = self.store["checkpoints"].get(checkpoint_id)
        if checkpoint is None or checkpoint["vm_id"] != vm_id:
            raise not_found("checkpoints", checkpoint_id)
        return checkpoint

    def active_backup(self, vm_id: str) -> dict | None:
        return next(
            (b for b in self.store["backups"].values() if b["vm_id"] == vm_id and b["phase"] in ACTIVE_BACKUP_PHASES),
            None,
        )

    def backup_of_disk(self, disk_id: str) -> dict | None:
        """The active backup that holds this disk (and keeps it locked)."""
        return next(
            (b for b in self.store["backups"].values() if b["phase"] in ACTIVE_BACKUP_PHASES and disk_id in b["disks"]),
            None,
        )

    def check_not_during_backup(self, vm: dict, action: str) -> None:
        """What other commands (snapshots, run) refuse while the VM is backed up."""
        if self.active_backup(vm["id"]) is not None:
            raise conflict(f"Cannot {action}. The VM is during a backup operation.")

    def _vm_runtime(self, vm_id: str):
        """The running VM's qemu (VmQemu), or None while there is none."""
        runtimes = getattr(self, "vm_qemus", None)
        return runtimes.get(vm_id) if runtimes else None

    @staticmethod
    def tracks_changes(disk: dict) -> bool:
        """A disk that gets a checkpoint bitmap: incremental backup enabled, QCOW2 active volume."""
        return disk["backup"] == "incremental" and disk["volumes"][-1]["format"] == "cow"

    # ----- start -------------------------------------------------------------------------

    def add_backup(self, vm_id: str, spec, *, require_consistency: bool = False) -> dict:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            wanted = []
            for d in spec.disks or []:
                if d.id and d.id not in wanted:
                    wanted.append(d.id)
            missing = [d for d in wanted if d not in self.store["disks"]]
            if missing:
                raise bad_request(
                    f"Cannot backup VM. The following disk(s) ID(s) does not exist: {', '.join(missing)}."
                )
            disks = [self.store["disks"][d] for d in wanted]
            locked = [d["name"] for d in disks if d["status"] == "locked"]
            if locked:
                raise conflict(
                    f"Cannot backup VM: The following disks are locked: {', '.join(locked)}. "
                    "Please try again in a few minutes."
                )
            attachments = {a["disk_id"]: a for a in vm["disk_attachments"]}
            inactive = [d for d in wanted if d not in attachments or not attachments[d]["active"]]
            if inactive:
                raise conflict(
                    f"Cannot backup VM. The following disks are not active on VM {vm['name']}: {', '.join(inactive)}"
                )
            from_checkpoint = None
            if spec.from_checkpoint_id:
                from_checkpoint = self.store["checkpoints"].get(spec.from_checkpoint_id)
                if from_checkpoint is None or from_checkpoint["vm_id"] != vm_id:
                    raise bad_request(f"Cannot backup VM. Checkpoint ID {spec.from_checkpoint_id} doesn't exist.")
                if from_checkpoint["state"] == "invalid":
                    raise bad_request(
                        f"Cannot backup VM. Checkpoint ID {spec.from_checkpoint_id} is invalid and should be removed."
                    )
            if vm["status"] not in ("up", "down"):
                raise conflict("Cannot backup VM. The Virtual Machine should be in Up or Down status.")
            if self.active_backup(vm_id) is not None:
                raise conflict("Cannot backup VM. The VM is during a backup operation.")
            if spec.description is not None and len(spec.description) > 1024:
                raise bad_request(
                    "Cannot backup VM. The VM backup description shouldn't contain more than 1024 characters."
                )
            if spec.id and spec.id in self.store["backups"]:
                raise bad_request(f"Cannot backup VM. The specified VM backup ID {spec.id} already exists.")

            live = vm["status"] == "up"
            # A live backup is the VM's host's; a cold one has no host (the engine picks one per operation).
            host_id = vm["host_id"] if live else None
            from_disks = set(from_checkpoint["disk_ids"]) if from_checkpoint else set()
            backup_id = spec.id or new_id()
            now = now_iso()
            backup = {
                "id": backup_id,
                "vm_id": vm_id,
                "phase": "initializing",
                "failing": False,
                "type": "live" if live else "cold",
                "from_checkpoint_id": from_checkpoint["id"] if from_checkpoint else None,
                "to_checkpoint_id": None,
                "checkpoint_id": None,  # created now, reported as to_checkpoint_id once the bitmaps exist
                # The engine decides per disk: incremental only where the from-checkpoint has it.
                "disks": {d["id"]: "incremental" if d["id"] in from_disks else "full" for d in disks},
                "urls": {},
                "description": spec.description,
                "host_id": host_id,
                "require_consistency": require_consistency,
                "creation_date": now,
                "modification_date": now,
            }
            checkpoint_disks = [d["id"] for d in disks if self.tracks_changes(d)]
            if checkpoint_disks:
                chain = self.vm_checkpoints(vm_id)
                checkpoint_id = new_id()
                self.store["checkpoints"][checkpoint_id] = {
                    "id": checkpoint_id,
                    "vm_id": vm_id,
                    "parent_id": chain[-1]["id"] if chain else None,
                    "creation_date": now,
                    "seq": self._next_seq(),
                    "disk_ids": checkpoint_disks,
                    "state": "created",
                    "description": spec.description,
                }
                backup["checkpoint_id"] = checkpoint_id
            for disk in disks:
                disk["status"] = "locked"
            self.store["backups"][backup_id] = backup
            self.event(
                f"Backup {backup_id} for VM {vm['name']} started (User: {USER}).", code=VM_BACKUP_STARTED, vm_id=vm_id
            )
            self.store.save()
        self._spawn(self._start_backup, backup_id)
        return backup

    def _next_seq(self) -> int:
        meta = self.store.meta
        meta["checkpoint_seq"] = meta.get("checkpoint_seq", 0) + 1
        return meta["checkpoint_seq"]

    def _start_backup(self, backup_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            backup = self.store["backups"][backup_id]
            checkpoint = self.store["checkpoints"].get(backup["checkpoint_id"] or "")
            live = backup["type"] == "live"
            if live:
                backup["phase"] = "starting"
                backup["modification_date"] = now_iso()
                self.store.save()
        if live and backup.get("require_consistency") and not self._guest_can_freeze(backup):
            # vdsm freezes the guest before it starts the backup; with consistency required, a guest
            # that cannot freeze fails the backup (asynchronously: the engine accepted it).
            self._end_backup(backup_id, success=False)
            return
        try:
            if live:
                self._start_live_backup(backup, checkpoint)
            else:
                self._add_cold_bitmaps(backup, checkpoint)
        except _FullBackupNeeded as e:
            log.warning("backup %s: %s", backup_id, e)
            self._drop_checkpoint_chain(backup, str(e))
            self._end_backup(backup_id, success=False)
            return
        except (qemu.QemuError, OSError) as e:
            log.warning("backup %s failed to start: %s", backup_id, e)
            self._end_backup(backup_id, success=False, reason=str(e))
            return
        with self.store.lock:
            if backup["phase"] not in ("initializing", "starting"):
                # Finalized before it was ready (a premature stop), or the VM went down meanwhile.
                stopped = True
            else:
                stopped = False
                backup["phase"] = "ready"
                backup["to_checkpoint_id"] = backup["checkpoint_id"]
                backup["modification_date"] = now_iso()
                self.store.save()
        if stopped:
            self._end_backup(backup_id, success=False)

    def _guest_can_freeze(self, backup: dict) -> bool:
        with self.store.lock:
            vm = self.store["vms"].get(backup["vm_id"])
            if vm is None or (vm["guest_agent"] and not vm.get("guest_freeze_hangs")):
                return True
            host = self.store["hosts"].get(backup["host_id"] or "", {"name": "host"})
            why = "the guest agent did not answer in time" if vm["guest_agent"] else "the guest agent is not responding"
            self.event(
                f"VDSM {host['name']} command StartVmBackupVDS failed: Failed to freeze guest filesystems on VM "
                f"{vm['name']}: {why}",
                severity="error",
                code=VDS_BROKER_COMMAND_FAILURE,
                vm_id=vm["id"],
            )
            return False

    def _add_cold_bitmaps(self, backup: dict, checkpoint: dict | None) -> None:
        if checkpoint is None:
            return
        for disk_id in checkpoint["disk_ids"]:
            with self.store.lock:
                disk = self.store["disks"][disk_id]
            # On a block domain the chain's LVs are active meanwhile (on the SPM: the VM is down).
            with self._volume_locks[disk_id], self.prepared(disk) as host_id:
                with self.store.lock:
                    path = self.volume_path(disk, self.top_volume(disk), host_id=host_id)
                qemu.add_bitmap(path, checkpoint["id"])

    def _start_live_backup(self, backup: dict, checkpoint: dict | None) -> None:
        runtime = self._vm_runtime(backup["vm_id"])
        if runtime is None or not runtime.running:
            raise qemu.QemuError("the VM's qemu is not running")
        from_id = backup["from_checkpoint_id"]
        incremental = [d for d, mode in backup["disks"].items() if mode == "incremental"]
        # libvirt redefines the from-checkpoint first and validates its bitmaps.
        for disk_id in incremental:
            found = {b["name"]: b for b in runtime.bitmaps(disk_id)}
            bitmap = found.get(from_id)
            if bitmap is None:
                raise _FullBackupNeeded(f"bitmap {from_id} does not exist in disk {disk_id}")
            if bitmap.get("inconsistent"):
                raise _FullBackupNeeded(f"bitmap {from_id} of disk {disk_id} is inconsistent")
        scratch = self.run_dir / "scratch" / backup["id"]
        scratch.mkdir(parents=True, exist_ok=True)
        urls = runtime.begin_backup(
            backup["id"],
            disks={d: (from_id if mode == "incremental" else None) for d, mode in backup["disks"].items()},
            checkpoint=checkpoint["id"] if checkpoint else None,
            checkpoint_disks=set(checkpoint["disk_ids"]) if checkpoint else set(),
            scratch_dir=scratch,
        )
        with self.store.lock:
            backup["urls"] = dict(urls)
            self.store.save()

    def _drop_checkpoint_chain(self, backup: dict, why: str) -> None:
        """What the engine does when libvirt cannot redefine the from-checkpoint: every
        checkpoint of the VM goes (bitmaps and records), and a full backup is needed."""
        vm_id = backup["vm_id"]
        runtime = self._vm_runtime(vm_id)
        with self.store.lock:
            chain = [c for c in self.vm_checkpoints(vm_id) if c["id"] != backup["checkpoint_id"]]
            vm = self.store["vms"][vm_id]
        for checkpoint in chain:
            for disk_id in checkpoint["disk_ids"]:
                try:
                    if runtime is not None and runtime.running:
                        runtime.remove_bitmap(disk_id, checkpoint["id"])
                    else:
                        self._remove_cold_bitmap(disk_id, checkpoint["id"])
                except (qemu.QemuError, OSError, KeyError) as e:
                    log.warning("removing bitmap %s of disk %s failed: %s", checkpoint["id"], disk_id, e)
        with self.store.lock:
            for checkpoint in chain:
                self.store["checkpoints"].pop(checkpoint["id"], None)
            self.event(
                f"Incremental backup {backup['id']} for VM {vm['name']} failed. Full backup is now needed "
                f"(User: {USER}).",
                severity="error",
                code=VM_INCREMENTAL_BACKUP_FAILED_FULL_VM_BACKUP_NEEDED,
                vm_id=vm_id,
                reason=why,
            )
            self.store.save()

    # ----- finalize and end ------------------------------------------------------------

    def finalize_backup(self, vm_id: str, backup_id: str) -> None:
        with self.store.lock:
            backup = self.vm_backup(vm_id, backup_id)
            vm = self.store["vms"][vm_id]
            active = [
                t
                for t in self.store["imagetransfers"].values()
                if t.get("backup_id") == backup_id and t["phase"] not in FINAL_PHASES
            ]
            if active:
                raise conflict("Cannot stop VM backup. There is an active image transfer for VM backup")
            phase = backup["phase"]
            if phase == "finalizing" or phase in FINAL_BACKUP_PHASES:
                raise bad_request(
                    f"VM '{vm_id}' backup '{backup_id}' is already in '{phase.upper()}' phase, "
                    "no need to stop the backup again"
                )
            backup["phase"] = "finalizing"
            backup["modification_date"] = now_iso()
            if phase != "ready":
                # The start worker sees the phase change and ends the backup as failed.
                backup["failing"] = True
                self.store.save()
                raise bad_request(
                    f"Backup '{backup_id}' is in '{phase.upper()}' phase, premature backup stop was initiated."
                )
            self.event(
                f"Backup {backup_id} for VM {vm['name']} finalized (User: {USER}).",
                code=VM_BACKUP_FINALIZED,
                vm_id=vm_id,
            )
            self.store.save()
        self._spawn(self._finalize_backup, backup_id)

    def _finalize_backup(self, backup_id: str) -> None:
        time.sleep(self.async_delay)
        ok = True
        with self.store.lock:
            backup = self.store["backups"][backup_id]
            live = backup["type"] == "live"
        if live:
            runtime = self._vm_runtime(backup["vm_id"])
            try:
                if runtime is None or not runtime.running:
                    raise qemu.QemuError("the VM's qemu is not running")
                runtime.end_backup(backup_id)
            except qemu.QemuError as e:
                log.warning("stopping backup %s failed: %s", backup_id, e)
                ok = False
        # A backup stuck in finalizing (fault switch finalize_backup_delay, seconds), as when vdsm
        # is slow; turning the switch off ends the wait.
        started = time.monotonic()
        while time.monotonic() - started < self.faults.finalize_backup_delay and not self._stopping.wait(0.1):
            pass
        self._end_backup(backup_id, success=ok)

    def _end_backup(self, backup_id: str, *, success: bool, reason: str | None = None) -> None:
        """The backup ends: disks unlocked; on failure its new checkpoint goes (endWithFailure)."""
        with self.store.lock:
            backup = self.store["backups"].get(backup_id)
            if backup is None or backup["phase"] in FINAL_BACKUP_PHASES:
                return
            vm = self.store["vms"].get(backup["vm_id"], {"name": backup["vm_id"]})
            if backup["failing"]:
                success = False
            checkpoint = None
            if not success and backup["checkpoint_id"]:
                checkpoint = self.store["checkpoints"].pop(backup["checkpoint_id"], None)
                backup["to_checkpoint_id"] = None
            for disk_id in backup["disks"]:
                self._unlock_disk(disk_id)
            backup["phase"] = "succeeded" if success else "failed"
            backup["modification_date"] = backup["finished"] = now_iso()
            if success:
                self.event(
                    f"Backup {backup_id} for VM {vm['name']} completed successfully (User: {USER}).",
                    code=VM_BACKUP_SUCCEEDED,
                    vm_id=backup["vm_id"],
                )
            else:
                self.event(
                    f"Backup {backup_id} for VM {vm['name']} failed (User: {USER}).",
                    severity="error",
                    code=VM_BACKUP_FAILED,
                    vm_id=backup["vm_id"],
                    **({"reason": reason} if reason else {}),
                )
            self.store.save()
        runtime = self._vm_runtime(backup["vm_id"])
        if runtime is not None and not runtime.running:
            runtime = None
        if backup["type"] == "live" and not success and runtime is not None:
            try:
                runtime.end_backup(backup_id)
            except qemu.QemuError as e:
                log.warning("ending backup %s failed: %s", backup_id, e)
        if backup["type"] == "live":
            shutil.rmtree(self.run_dir / "scratch" / backup_id, ignore_errors=True)
        if checkpoint is not None:
            # The bitmaps of a checkpoint the engine forgot would only mislead a later backup.
            for disk_id in checkpoint["disk_ids"]:
                try:
                    if runtime is not None:
                        if runtime.has_disk(disk_id):
                            runtime.remove_bitmap(disk_id, checkpoint["id"], missing_ok=True)
                    else:  # nothing holds the volumes (a VM that is down, or before its qemu starts)
                        self._remove_cold_bitmap(disk_id, checkpoint["id"])
                except (qemu.QemuError, OSError, KeyError) as e:
                    log.warning("removing bitmap %s of disk %s failed: %s", checkpoint["id"], disk_id, e)

    def backups_vm_went_down(self, vm_id: str) -> None:
        """The VM stopped during a live backup: its exports are gone, so is the backup."""
        with self.store.lock:
            backup = self.active_backup(vm_id)
            if backup is None or backup["type"] != "live":
                return
            backup["failing"] = True
            transfers = [
                t["id"]
                for t in self.store["imagetransfers"].values()
                if t.get("backup_id") == backup["id"] and t["phase"] not in FINAL_PHASES
            ]
            for tid in transfers:
                self.store["imagetransfers"][tid]["phase"] = "cancelled_system"
            self.store.save()
        for tid in transfers:
            self._close_transfer(tid, False)
        self._end_backup(backup["id"], success=False, reason="the VM was stopped during the backup")

    # ----- checkpoints -----------------------------------------------------------------

    def remove_checkpoint(self, vm_id: str, checkpoint_id: str) -> None:
        with self.store.lock:
            checkpoint = self.vm_checkpoint(vm_id, checkpoint_id)
            vm = self.store["vms"][vm_id]
            if self.active_backup(vm_id) is not None:
                raise conflict("Cannot remove checkpoint. The VM is during a backup operation.")
            disks = [self.store["disks"][d] for d in checkpoint["disk_ids"] if d in self.store["disks"]]
            locked = [d["name"] for d in disks if d["status"] == "locked"]
            if locked:
                raise conflict(
                    f"Cannot remove checkpoint: The following disks are locked: {', '.join(locked)}. "
                    "Please try again in a few minutes."
                )
            runtime = self._vm_runtime(vm_id) if vm["status"] != "down" else None
            if runtime is None:
                checkpoint["state"] = "invalid"  # the engine invalidates it before removing the bitmaps
                self.store.save()
        failed = None
        for disk in disks:
            try:
                if runtime is not None:
                    runtime.remove_bitmap(disk["id"], checkpoint_id)
                else:
                    self._remove_cold_bitmap(disk["id"], checkpoint_id)
            except (qemu.QemuError, OSError) as e:
                failed = e
        with self.store.lock:
            if failed is not None:
                self.event(
                    f"Failed to delete checkpoint {checkpoint_id} for VM {vm['name']} (User: {USER}).",
                    severity="error",
                    code=VM_CHECKPOINT_FAILED_TO_DELETE,
                    vm_id=vm_id,
                )
                self.store.save()
                raise EngineFault(400, f"[Failed to delete checkpoint {checkpoint_id}: {failed}]")
            for other in self.store["checkpoints"].values():
                if other["parent_id"] == checkpoint_id:
                    other["parent_id"] = checkpoint["parent_id"]
            self.store["checkpoints"].pop(checkpoint_id, None)
            self.event(
                f"Checkpoint {checkpoint_id} for VM {vm['name']} deleted (User: {USER}).",
                code=VM_CHECKPOINT_DELETED,
                vm_id=vm_id,
            )
            self.store.save()

    def _remove_cold_bitmap(self, disk_id: str, name: str) -> None:
        """Remove a bitmap from every volume of a disk no process holds."""
        # qemu-img takes the image's write lock: one bitmap change per disk at a time (a failed
        # backup's cleanup and the next backup's new bitmap would otherwise collide).
        with self.store.lock:
            disk = self.store["disks"][disk_id]
        with self._volume_locks[disk_id], self.prepared(disk) as host_id:
            with self.store.lock:
                paths = [
                    self.volume_path(disk, v["id"], host_id=host_id) for v in disk["volumes"] if v["format"] == "cow"
                ]
            for path in paths:
                if path.exists() and any(b["name"] == name for b in qemu.bitmaps(path)):
                    qemu.remove_bitmap(path, name)

    def cold_backup_export(self, transfer: dict, disk: dict, socket: Path) -> qemu.NbdServer:
        """The NBD export of a cold backup's disk (vdsm's StartNbdServer with `bitmap`): the whole
        chain read-only; for an incremental disk, a transient overlay whose bitmap merges the
        from-checkpoint's bitmap of every layer since the checkpoint, exported with --bitmap."""
        with self.store.lock:
            backup = self.store["backups"][transfer["backup_id"]]
            mode = backup["disks"][disk["id"]]
            # On a block domain: the LVs the transfer activated on its host.
            host_id = transfer["host_id"] if self.on_lvm(disk) else None
            volumes = [(self.volume_path(disk, v["id"], host_id=host_id), v["format"]) for v in disk["volumes"]]
            bitmap = backup["from_checkpoint_id"] if mode == "incremental" else None
        top, top_fmt = volumes[-1]
        fmt = "qcow2" if top_fmt == "cow" else "raw"
        if bitmap is None:
            # A RAW LV is rounded up to whole extents: export the disk's own size.
            size = disk["provisioned_size"] if host_id and fmt == "raw" else None
            return qemu.NbdServer(top, socket, fmt=fmt, read_only=True, size=size)
        with self._volume_locks[disk["id"]]:
            return self._bitmap_export(volumes, bitmap, socket, disk["id"])

    def _bitmap_export(self, volumes: list, bitmap: str, socket: Path, disk_id: str) -> qemu.NbdServer:
        top, top_fmt = volumes[-1]
        fmt = "qcow2" if top_fmt == "cow" else "raw"
        layers = []
        for path, vfmt in reversed(volumes):
            found = {b["name"]: b for b in qemu.bitmaps(path)} if vfmt == "cow" else {}
            if bitmap not in found:
                break
            if "in-use" in found[bitmap].get("flags", []):
                raise qemu.QemuError(f"Bitmap '{bitmap}' is inconsistent and cannot be used (volume {path.name})")
            layers.append(path)
        if not layers:
            raise qemu.QemuError(f"Bitmap '{bitmap}' does not exist in the active volume of disk {disk_id}")
        overlay = socket.with_suffix(".overlay.qcow2")
        # The overlay is made before any qemu-nbd has made the socket directory (the first export
        # after a start may be this one).
        overlay.parent.mkdir(parents=True, exist_ok=True)
        overlay.unlink(missing_ok=True)
        qemu.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(top), "-F", fmt, str(overlay))
        qemu.add_bitmap(overlay, bitmap, enabled=False)
        for path in layers:
            qemu.merge_bitmap(overlay, bitmap, source=path, source_name=bitmap)
        server = qemu.NbdServer(overlay, socket, fmt="qcow2", read_only=True, bitmap=bitmap)
        server.overlay = overlay
        return server

    def crash_vm_qemu(self, vm_id: str) -> None:
        """The VM's qemu dies (SIGKILL) and is started again: the bitmaps it held are left in
        use, i.e. inconsistent; a live backup it served fails with it."""
        with self.store.lock:
            vm = self.get("vms", vm_id)
            runtime = self._vm_runtime(vm_id)
            if vm["status"] != "up" or runtime is None or not runtime.running:
                raise conflict(f"VM {vm['name']} has no running qemu to crash.")
        self.backups_vm_went_down(vm_id)
        self.stop_vm_qemu(vm_id, crash=True)
        self.start_vm_qemu(vm_id)

    def forget_vm_backups(self, vm_id: str) -> None:
        """A removed VM's backups and checkpoints go with it (the engine's foreign keys cascade),
        so a VM imported again with the same id starts with none."""
        for collection in ("backups", "checkpoints"):
            for ident in [x["id"] for x in self.store[collection].values() if x["vm_id"] == vm_id]:
                del self.store[collection][ident]

    # ----- restart, retention ----------------------------------------------------------

    def recover_backups(self) -> None:
        """After a restart: backups in flight fail as after an engine crash (no longer monitored)."""
        with self.store.lock:
            unfinished = [b for b in self.store["backups"].values() if b["phase"] in ACTIVE_BACKUP_PHASES]
        for backup in unfinished:
            with self.store.lock:
                vm = self.store["vms"].get(backup["vm_id"], {"name": backup["vm_id"]})
                self.event(
                    f"Backup {backup['id']} for VM {vm['name']} was marked as failed since it is no longer "
                    "monitored, cleanup may be required.",
                    severity="error",
                    code=VM_BACKUP_FAILED_UNMONITORED,
                    vm_id=backup["vm_id"],
                )
                backup["failing"] = True
            self._end_backup(backup["id"], success=False)

    def forget_old_backups(self) -> None:
        """The engine's cleanup: succeeded backups go after 15 minutes, failed ones after 30."""
        now = datetime.datetime.now(datetime.UTC)
        with self.store.lock:
            meta = self.store.meta
            limits = {
                "succeeded": meta.get("succeeded_backup_retention", 15 * 60),
                "failed": meta.get("failed_backup_retention", 30 * 60),
            }
            old = [
                b["id"]
                for b in self.store["backups"].values()
                if b["phase"] in FINAL_BACKUP_PHASES
                and (now - datetime.datetime.fromisoformat(b["finished"])).total_seconds() > limits[b["phase"]]
            ]
            for backup_id in old:
                del self.store["backups"][backup_id]
            if old:
                self.store.save()
