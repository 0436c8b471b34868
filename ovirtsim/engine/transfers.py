"""Image transfers: imageio tickets over qemu-nbd or files, their phases, inactivity timeouts."""

import datetime
import time

from ovirtsim import lvm, qemu
from ovirtsim.engine.core import FINAL_PHASES, EngineCore, MiB, new_id, now_iso
from ovirtsim.errors import EngineFault, bad_request, conflict


class ImageTransfers(EngineCore):
    def start_monitor(self) -> None:
        super().start_monitor()
        self._spawn(self._monitor_transfers)

    def add_transfer(self, spec) -> dict:
        direction = spec.direction.value if spec.direction else "upload"
        fmt = spec.format.value if spec.format else "cow"
        shallow = bool(spec.shallow)
        with self.store.lock:
            snapshot_volume = None
            if spec.snapshot is not None and spec.snapshot.id:
                disk, vol, _ = self.disk_snapshot(spec.snapshot.id)
                snapshot_volume = vol["id"]
                if direction == "upload":
                    raise bad_request("Cannot transfer Virtual Disk. Uploading into a disk snapshot is not supported.")
            elif spec.disk is not None and spec.disk.id:
                disk = self.get("disks", spec.disk.id)
            elif spec.image is not None and spec.image.id:
                disk = self.get("disks", spec.image.id)
            else:
                raise bad_request(
                    "Cannot transfer Virtual Disk. Disk or disk snapshot is required (disk.id or snapshot.id)."
                )
            if spec.backup is not None and spec.backup.id:
                return self._add_backup_transfer(spec, disk, direction, fmt)
            if disk["status"] == "locked":
                raise conflict(f"Cannot transfer Virtual Disk. Disk {disk['name']} is locked. Please try again later.")
            if disk["status"] == "illegal" and direction == "download":
                raise conflict(f"Cannot transfer Virtual Disk. Disk {disk['name']} is illegal.")
            vm = self.vm_of_disk(disk["id"])
            # The running guest writes the active volume: only older volumes can be read meanwhile.
            reads_active = snapshot_volume is None or snapshot_volume == self.top_volume(disk)
            if reads_active and vm is not None and vm["status"] != "down":
                raise conflict(
                    f"Cannot transfer Virtual Disk. Disk {disk['name']} is plugged to the running VM "
                    f"{vm['name']}; transfer a disk snapshot instead."
                )
            if direction == "upload" and len(disk["volumes"]) > 1:
                raise conflict(f"Cannot transfer Virtual Disk. Disk {disk['name']} has snapshots.")
            volume_id = snapshot_volume or self.top_volume(disk)
            index = next(i for i, v in enumerate(disk["volumes"]) if v["id"] == volume_id)
            volume = disk["volumes"][index]
            if direction == "download" and fmt == "cow" and index > 0 and not shallow:
                raise bad_request(
                    "Cannot transfer Virtual Disk. Downloading a volume with a backing chain in cow "
                    "format needs shallow=true; use format=raw for the whole chain."
                )
            if direction == "upload" and fmt == "cow" and volume["format"] != "cow":
                raise bad_request("Cannot transfer Virtual Disk. A qcow2 (cow) upload needs a disk in cow format.")
            host = self._pick_host(spec.host, vm)
            transfer_id = new_id()
            timeout = spec.inactivity_timeout if spec.inactivity_timeout is not None else 60
            transfer = {
                "id": transfer_id,
                "phase": "initializing",
                "direction": direction,
                "format": fmt,
                "shallow": shallow,
                "disk_id": disk["id"],
                "volume_id": volume_id,
                "snapshot_id": snapshot_volume,
                "host_id": host["id"],
                "inactivity_timeout": timeout,
                "timeout_policy": spec.timeout_policy.value if spec.timeout_policy else "legacy",
                "transfer_url": None,
                "proxy_url": None,
                "ticket": None,
                "transferred": 0,
                "active": False,
                "created": now_iso(),
                "finished": None,
            }
            disk["status"] = "locked"
            self.store["imagetransfers"][transfer_id] = transfer
            pause = self.faults.pause_next_transfer
            self.faults.pause_next_transfer = False
            self.store.save()
        self._spawn(self._start_transfer, transfer_id, pause)
        return transfer

    def _add_backup_transfer(self, spec, disk: dict, direction: str, fmt: str) -> dict:
        """A download of one disk of a VM backup (TransferDiskImageCommand with backup_id)."""
        backup = self.store["backups"].get(spec.backup.id)
        if backup is None:
            raise bad_request("Cannot transfer Virtual Disk. The specified VM backup does not exist.")
        if backup["phase"] != "ready":
            raise conflict(
                "Cannot transfer Virtual Disk. The VM backup is not in READY phase, backup phase is "
                f"{backup['phase'].upper()}."
            )
        if fmt == "cow":
            raise bad_request("Cannot transfer Virtual Disk. The specified format is not applicable for VM backup.")
        if direction != "download":
            raise bad_request("Cannot transfer Virtual Disk. A VM backup can only be downloaded.")
        if disk["id"] not in backup["disks"]:
            raise bad_request(
                f"Cannot transfer Virtual Disk. Disk {disk['name']} is not part of backup {backup['id']}."
            )
        if disk["status"] == "illegal":
            raise conflict(f"Cannot transfer Virtual Disk. Disk {disk['name']} is illegal.")
        # The host that runs the VM serves a live backup; any host a cold one.
        host = self.store["hosts"].get(backup["host_id"] or "") or self._pick_host(spec.host, None)
        transfer_id = new_id()
        timeout = spec.inactivity_timeout if spec.inactivity_timeout is not None else 60
        transfer = {
            "id": transfer_id,
            "phase": "initializing",
            "direction": "download",
            "format": "raw",
            "shallow": False,
            "disk_id": disk["id"],
            "volume_id": self.top_volume(disk),
            "snapshot_id": None,
            "backup_id": backup["id"],
            "host_id": host["id"],
            "inactivity_timeout": timeout,
            "timeout_policy": spec.timeout_policy.value if spec.timeout_policy else "legacy",
            "transfer_url": None,
            "proxy_url": None,
            "ticket": None,
            "transferred": 0,
            "active": False,
            "created": now_iso(),
            "finished": None,
        }
        # The backup holds the disk locked; the transfer neither locks nor unlocks it.
        self.store["imagetransfers"][transfer_id] = transfer
        pause = self.faults.pause_next_transfer
        self.faults.pause_next_transfer = False
        self.store.save()
        self._spawn(self._start_transfer, transfer_id, pause)
        return transfer

    def _pick_host(self, ref, vm: dict | None) -> dict:
        if ref is not None and (ref.id or ref.name):
            host = self.resolve("hosts", ref)
            if host["status"] != "up":
                raise conflict(f"Cannot transfer Virtual Disk. Host {host['name']} is not up.")
            return host
        if vm is not None and vm.get("host_id"):
            return self.store["hosts"][vm["host_id"]]
        hosts = [h for h in self.store["hosts"].values() if h["status"] == "up"]
        if not hosts:
            raise conflict("Cannot transfer Virtual Disk. No host is up in the data center.")
        return hosts[0]

    def _start_transfer(self, transfer_id: str, pause: bool) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            transfer = self.store["imagetransfers"][transfer_id]
            disk = self.store["disks"][transfer["disk_id"]]
            volume = next(v for v in disk["volumes"] if v["id"] == transfer["volume_id"])
            path = self.volume_path(disk, volume["id"], host_id=transfer["host_id"])
            size = disk["provisioned_size"]
            chain = self.chain_up_to(disk, volume["id"])
            # An NFS data domain served from here: its hosts' qemu-nbd reads it over NFS, the chain named.
            nfs = self.nfs_share(self.store["storagedomains"].get(disk["sd_id"]))
            below = [
                (self.volume_path(disk, v["id"]), "qcow2" if v["format"] == "cow" else "raw")
                for v in disk["volumes"]
                if v["id"] in chain[:-1]
            ]
        block = self.on_lvm(disk)
        if pause:
            with self.store.lock:
                # Events go with the change they explain, so a client never sees one without the other.
                self.event(
                    f"Image transfer for disk {disk['name']} was paused by the system.", severity="warning", code=1032
                )
                transfer["phase"] = "paused_system"
                self.store.save()
            return
        ticket_id = new_id()
        ops = ["read"] if transfer["direction"] == "download" else ["read", "write"]
        dirty = False
        try:
            if block:
                # vdsm prepares the image on the transfer's host: the chain's LVs active there meanwhile.
                self.activate_chain(disk, chain, host_id=transfer["host_id"], holder=f"transfer:{transfer_id}")
            backup = self.store["backups"].get(transfer.get("backup_id") or "")
            if backup is not None:
                dirty = backup["disks"][disk["id"]] == "incremental"
                if backup["type"] == "live":
                    url = backup["urls"][disk["id"]]
                else:
                    server = self.cold_backup_export(transfer, disk, self.run_dir / f"b-{ticket_id[:8]}.sock")
                    self._nbd[transfer_id] = server
                    server.start()
                    url = server.url
            elif transfer["format"] == "raw":
                server = qemu.NbdServer(
                    path,
                    self.run_dir / f"t-{ticket_id[:8]}.sock",
                    fmt="qcow2" if volume["format"] == "cow" else "raw",
                    read_only=transfer["direction"] == "download",
                    shallow=transfer["shallow"],
                    # A RAW LV is rounded up to whole extents: export the volume's own size, as vdsm does.
                    size=size if block and volume["format"] != "cow" else None,
                    nfs=nfs,
                    netns=self.storage_netns,
                    backing=below,
                )
                server.start()
                self._nbd[transfer_id] = server
                url = server.url
            elif block:
                url = f"file://{path}"
                size = volume["lv_size"]  # a QCOW2 volume on a block domain is its whole LV
            else:
                url = f"file://{path}"
                # An upload needs room for the qcow2 metadata the client sends along with the data.
                size = path.stat().st_size if transfer["direction"] == "download" else size + size // 8 + 64 * MiB
            ticket = {
                "uuid": ticket_id,
                "size": size,
                "url": url,
                "timeout": 24 * 3600,
                "ops": ops,
                "inactivity_timeout": transfer["inactivity_timeout"],
                # As the engine's isSparseImage(): zeroes punch holes only in a thin volume on a file
                # domain; a preallocated one keeps its allocation through an upload.
                "sparse": self.volume_sparse(disk, volume["id"]) and not block,
                "dirty": dirty,
                "transfer_id": transfer_id,
            }
            self.imageio.add_ticket(ticket)
            if self.imageio_proxy is not None:
                # The engine's proxy ticket has the same id and points at the host's ticket.
                self.imageio_proxy.add_ticket(ticket | {"url": f"{self.imageio.images_url}/{ticket_id}"})
        except Exception as e:
            self._remove_tickets(ticket_id)
            self._stop_nbd(transfer_id)
            self.lvm.release_holder(f"transfer:{transfer_id}")
            with self.store.lock:
                self.event(f"Image transfer for disk {disk['name']} failed to start: {e}", severity="error", code=1033)
                transfer["phase"] = "finished_failure"
                transfer["finished"] = now_iso()
                if not transfer.get("backup_id"):
                    self._unlock_disk(transfer["disk_id"])
                self.store.save()
            return
        with self.store.lock:
            transfer["ticket"] = ticket_id
            if transfer["phase"] != "initializing":  # cancelled meanwhile
                self._spawn(self._close_transfer, transfer_id, False)
                return
            transfer["transfer_url"] = f"{self.imageio.images_url}/{ticket_id}"
            if not self.store.meta.get("hosts_reachable", True):
                # The host's address as a client sees it, where nothing answers it: the hosts' network
                # is not routed to the client (the engine still reaches the host's daemon).
                host = self.store["hosts"][transfer["host_id"]]
                address = host.get("address") or host["name"]
                transfer["transfer_url"] = f"https://{address}:{self.imageio.port}/images/{ticket_id}"
            proxy = self.imageio_proxy or self.imageio
            transfer["proxy_url"] = f"{proxy.images_url}/{ticket_id}"
            transfer["phase"] = "transferring"
            transfer["last_activity"] = time.monotonic()
            self.store.save()

    def _remove_tickets(self, ticket_id: str) -> str | None:
        """Remove the ticket from the engine's proxy, then from the host; what failed, in words."""
        error = None
        for daemon in (self.imageio_proxy, self.imageio):
            if daemon is not None:
                try:
                    daemon.remove_ticket(ticket_id)
                except Exception as e:
                    error = error or f"removing the ticket failed: {e}"
        return error

    def _stop_nbd(self, transfer_id: str) -> None:
        server = self._nbd.pop(transfer_id, None)
        if server:
            server.stop()
            overlay = getattr(server, "overlay", None)
            if overlay is not None:
                overlay.unlink(missing_ok=True)

    def transfer_action(self, transfer_id: str, action: str) -> None:
        with self.store.lock:
            transfer = self.get("imagetransfers", transfer_id)
            phase = transfer["phase"]
            if action == "finalize":
                if phase not in ("transferring", "paused_user", "paused_system"):
                    raise conflict(f"Cannot finalize image transfer in phase {phase}.")
                transfer["phase"] = "finalizing_success"
                self.store.save()
                self._spawn(self._close_transfer, transfer_id, True)
            elif action == "cancel":
                if phase in FINAL_PHASES or phase.startswith("finalizing"):
                    raise conflict(f"Cannot cancel image transfer in phase {phase}.")
                transfer["phase"] = "cancelled_user"
                self.store.save()
                if phase != "initializing":
                    self._spawn(self._close_transfer, transfer_id, False)
            elif action == "pause":
                if phase != "transferring":
                    raise conflict(f"Cannot pause image transfer in phase {phase}.")
                transfer["phase"] = "paused_user"
                self.store.save()
            elif action == "resume":
                if phase not in ("paused_user", "paused_system"):
                    raise conflict(f"Cannot resume image transfer in phase {phase}.")
                if transfer["ticket"] is None:
                    transfer["phase"] = "initializing"
                    self.store.save()
                    self._spawn(self._start_transfer, transfer_id, False)
                else:
                    transfer["phase"] = "transferring"
                    transfer["last_activity"] = time.monotonic()
                    self.store.save()
            else:
                raise bad_request(f"Unknown action {action}")

    def _close_transfer(self, transfer_id: str, success: bool) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            transfer = self.store["imagetransfers"][transfer_id]
            disk = self.store["disks"][transfer["disk_id"]]
            ticket = transfer["ticket"]
        error = None
        if ticket:
            try:
                info = self.imageio.get_ticket(ticket)
                if info:
                    transfer["transferred"] = info.get("transferred", 0)
            except Exception as e:
                error = f"reading the ticket failed: {e}"
            error = self._remove_tickets(ticket) or error
        self._stop_nbd(transfer_id)
        new_disk_status = "ok"
        if success and transfer["direction"] == "upload" and error is None:
            try:
                qemu.check(self.volume_path(disk, transfer["volume_id"], host_id=transfer["host_id"]))
            except qemu.QemuError as e:
                error = f"the uploaded image is not valid: {e}"
                new_disk_status = "illegal"
        try:
            self.lvm.release_holder(f"transfer:{transfer_id}")  # vdsm's teardownImage
        except lvm.LvmError as e:
            error = error or f"deactivating the volume failed: {e}"
        # An upload that did not complete leaves nothing usable: the engine removes the disk, and the
        # transfer ends only after that, so a client that sees it ended finds the disk gone.
        remove_disk = transfer["direction"] == "upload" and not success
        with self.store.lock:
            if error:
                self.event(f"Image transfer for disk {disk['name']} failed: {error}", severity="error", code=1033)
            else:
                verb = "Download" if transfer["direction"] == "download" else "Upload"
                self.event(f"{verb} of disk {disk['name']} {'completed' if success else 'was cancelled'}.", code=1031)
            transfer["ticket"] = None
            if not transfer.get("backup_id"):
                self._unlock_disk(transfer["disk_id"], new_disk_status)
            if not remove_disk:
                transfer["phase"] = "finished_success" if success and error is None else "finished_failure"
                transfer["finished"] = now_iso()
            self.store.save()
        if remove_disk:
            try:
                self.remove_disk(transfer["disk_id"])
            except EngineFault:
                pass
            with self.store.lock:
                transfer["phase"] = "finished_failure"
                transfer["finished"] = now_iso()
                self.store.save()

    def _monitor_transfers(self) -> None:
        """Apply inactivity timeouts and forget transfers that ended a while ago, as the engine does."""
        while not self._stopping.wait(0.5):
            expired, forget = [], []
            with self.store.lock:
                for transfer in self.store["imagetransfers"].values():
                    if transfer["phase"] in FINAL_PHASES and transfer["finished"]:
                        finished = datetime.datetime.fromisoformat(transfer["finished"])
                        age = datetime.datetime.now(datetime.UTC) - finished
                        if age.total_seconds() > self.store.meta.get("transfer_retention", 10):
                            forget.append(transfer["id"])
                    elif transfer["phase"] == "transferring" and transfer["ticket"]:
                        expired.append(transfer)
                for tid in forget:
                    del self.store["imagetransfers"][tid]
                if forget:
                    self.store.save()
            for transfer in expired:
                try:
                    info = self.imageio.get_ticket(transfer["ticket"])
                except Exception:
                    continue
                if not info:
                    continue
                transfer["transferred"] = info.get("transferred", 0)
                transfer["active"] = bool(info.get("active"))
                if info.get("active") or info.get("connections"):
                    transfer["last_activity"] = time.monotonic()
                    continue
                idle = time.monotonic() - transfer.get("last_activity", time.monotonic())
                if transfer["inactivity_timeout"] and idle > transfer["inactivity_timeout"]:
                    with self.store.lock:
                        if transfer["phase"] != "transferring":
                            continue
                        if transfer["timeout_policy"] == "cancel":
                            transfer["phase"] = "cancelled_system"
                            self.store.save()
                            self._spawn(self._close_transfer, transfer["id"], False)
                        else:
                            transfer["phase"] = "paused_system"
                            self.store.save()
                    self.event(
                        f"Image transfer {transfer['id']} was inactive for {transfer['inactivity_timeout']}s.",
                        severity="warning",
                        code=1034,
                    )
