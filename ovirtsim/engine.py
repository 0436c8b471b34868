"""What the simulated engine does: entities, validations, asynchronous operations, data plane.

The Engine keeps the state in a Store and mutates it under the store's lock. Work on
images (qemu-img, qemu-nbd, imageio tickets) runs outside the lock in worker threads, and
the entity it works on is marked locked meanwhile, as the real engine does.
"""

import datetime
import logging
import secrets
import shutil
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ovirtsim import ovf, qemu
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found
from ovirtsim.imageio import ImageioDaemon
from ovirtsim.store import Store

log = logging.getLogger("ovirtsim")

GiB = 1024**3
MiB = 1024**2
FINAL_PHASES = {"finished_success", "finished_failure", "finished_cleanup", "cancelled"}
DEFAULT_STORAGE_CAPACITY = 512 * GiB


def new_id() -> str:
    return str(uuid.uuid4())


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Faults:
    """Switches tests flip to make the engine misbehave the way real ones do."""

    fail_next_snapshot: bool = False
    pause_next_transfer: bool = False
    delay_ms: int = 0
    reject_logins: bool = False


class Engine:
    def __init__(
        self, state_dir: Path, *, imageio: ImageioDaemon | None, run_dir: Path | None = None, async_delay: float = 0.05
    ):
        self.dir = Path(state_dir)
        # Unix socket paths are limited to 107 bytes, so sockets live in a short runtime directory.
        self.run_dir = Path(run_dir) if run_dir else self.dir / "run"
        self.store = Store(self.dir / "state.json")
        self.imageio = imageio
        self.async_delay = async_delay
        self.faults = Faults()
        self.tokens: dict[str, str] = {}
        self._nbd: dict[str, qemu.NbdServer] = {}
        # A live merge and a guest write touch the same volume files: on a host qemu serializes
        # them inside one process; here they are separate qemu processes, so a lock per disk.
        self._volume_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.request_count = 0

    # ----- life cycle -------------------------------------------------------------------

    @property
    def password(self) -> str:
        meta = self.store.meta
        if "admin_password" not in meta:
            meta["admin_password"] = secrets.token_urlsafe(12)
            self.store.save()
        return meta["admin_password"]

    def recover(self) -> None:
        """After a restart: nothing that was in flight survived, so close it as the engine would."""
        with self.store.lock:
            for t in self.store["imagetransfers"].values():
                if t["phase"] not in FINAL_PHASES:
                    t["phase"] = "finished_failure"
                    self._unlock_disk(t["disk_id"])
            for snap in list(self.store["snapshots"].values()):
                if snap["status"] == "locked":
                    snap["status"] = "ok"
            for disk in self.store["disks"].values():
                if disk["status"] == "locked":
                    disk["status"] = "ok"
            self.store.save()

    def start_monitor(self) -> None:
        self._spawn(self._monitor_transfers)

    def stop(self) -> None:
        self._stopping.set()
        for t in list(self._threads):
            t.join(timeout=30)
        for server in list(self._nbd.values()):
            server.stop()
        self._nbd.clear()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _guarded(self, target, *args) -> None:
        try:
            target(*args)
        except Exception:
            log.exception("engine task %s failed", target.__name__)

    # ----- authentication ---------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        user, _, domain = username.partition("@")
        if (
            self.faults.reject_logins
            or user != "admin"
            or domain.lower() not in ("internal", "internal-authz")
            or (not secrets.compare_digest(password, self.password))
        ):
            raise EngineFault(
                401,
                f"Cannot authenticate user '{username}': The username or password is incorrect..",
                reason="access_denied",
            )
        token = secrets.token_urlsafe(48)
        self.tokens[token] = username
        return token

    def check_token(self, token: str) -> bool:
        return token in self.tokens

    def logout(self, token: str) -> None:
        self.tokens.pop(token, None)

    # ----- lookups ----------------------------------------------------------------------

    def get(self, collection: str, ident: str) -> dict:
        item = self.store[collection].get(ident)
        if item is None:
            raise not_found(collection, ident)
        return item

    def find_by_name(self, collection: str, name: str) -> dict | None:
        return next((x for x in self.store[collection].values() if x["name"] == name), None)

    def resolve(self, collection: str, ref) -> dict:
        """An entity named in a request by id or by name."""
        if ref is None:
            raise bad_request(f"{collection[:-1]} is required")
        if getattr(ref, "id", None):
            return self.get(collection, ref.id)
        if getattr(ref, "name", None):
            found = self.find_by_name(collection, ref.name)
            if found is None:
                raise not_found(collection, ref.name)
            return found
        raise bad_request(f"{collection[:-1]} id or name is required")

    def volume_path(self, disk: dict, volume_id: str) -> Path:
        sd = self.store["storagedomains"][disk["sd_id"]]
        return Path(sd["path"]) / "images" / disk["id"] / volume_id

    def top_volume(self, disk: dict) -> str:
        return disk["volumes"][-1]["id"]

    def vm_of_disk(self, disk_id: str) -> dict | None:
        for vm in self.store["vms"].values():
            if any(a["disk_id"] == disk_id for a in vm["disk_attachments"]):
                return vm
        return None

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

    def event(
        self, description: str, *, severity: str = "normal", code: int = 0, vm_id: str | None = None, **external
    ) -> dict:
        with self.store.lock:
            events = self.store["events"]
            next_id = str(max((int(k) for k in events), default=0) + 1)
            events[next_id] = {
                "id": next_id,
                "time": now_iso(),
                "description": description,
                "severity": severity,
                "code": code,
                "vm_id": vm_id,
                **external,
            }
            for old in sorted(events, key=int)[:-500]:
                del events[old]
            return events[next_id]

    def add_external_event(self, spec) -> dict:
        """An event a client adds (a backup tool saying what it does), with its own origin and id."""
        if not spec.description:
            raise bad_request("Cannot add Event. The description is required (description).")
        if not spec.origin or spec.custom_id is None:
            raise bad_request("Cannot add Event. External events need origin and custom_id.")
        if spec.origin == "oVirt":
            raise bad_request("Cannot add Event. The origin oVirt is reserved for the engine's own events.")
        severity = spec.severity.value if spec.severity else "normal"
        vm_id = None
        if spec.vm is not None and spec.vm.id:
            with self.store.lock:
                vm_id = self.get("vms", spec.vm.id)["id"]
        codes = {"normal": 12000, "warning": 12001, "error": 12002, "alert": 12003}
        return self.event(
            spec.description,
            severity=severity,
            code=codes.get(severity, 12000),
            vm_id=vm_id,
            origin=spec.origin,
            custom_id=spec.custom_id,
        )

    def _job(self, description: str) -> str:
        job_id = new_id()
        self.store["jobs"][job_id] = {
            "id": job_id,
            "description": description,
            "status": "started",
            "start_time": now_iso(),
            "end_time": None,
        }
        return job_id

    def _end_job(self, job_id: str, ok: bool) -> None:
        job = self.store["jobs"].get(job_id)
        if job:
            job["status"] = "finished" if ok else "failed"
            job["end_time"] = now_iso()
        jobs = self.store["jobs"]
        for old in sorted(jobs, key=lambda k: jobs[k]["start_time"])[:-200]:
            del jobs[old]

    def store_actual(self, disk: dict, volume_id: str) -> int:
        return qemu.actual_size(self.volume_path(disk, volume_id))

    # ----- storage domains --------------------------------------------------------------

    def storage_usage(self, sd: dict) -> tuple[int, int, int]:
        """(available, used, committed) in bytes from the real files in the domain."""
        used = committed = 0
        for disk in self.store["disks"].values():
            if disk["sd_id"] == sd["id"]:
                committed += disk["provisioned_size"]
                used += sum(self.store_actual(disk, v["id"]) for v in disk["volumes"])
        capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
        return max(0, capacity - used), used, committed

    # ----- disks ------------------------------------------------------------------------

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
            if sd["block"] and fmt == "raw" and sparse:
                raise bad_request(
                    "Cannot add Virtual Disk. Disk configuration (RAW Sparse) is incompatible with "
                    "the storage domain type."
                )
            backup = spec.backup.value if spec.backup else "none"
            if backup == "incremental" and fmt != "cow":
                raise bad_request(
                    "Cannot add Virtual Disk. Incremental backup is supported only for disks in "
                    "QCOW2 format (format=cow)."
                )
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
            qemu.create(
                path,
                fmt="qcow2" if vol["format"] == "cow" else "raw",
                size=disk["provisioned_size"],
                preallocate=preallocate,
            )
        except qemu.QemuError as e:
            with self.store.lock:
                disk["status"] = "illegal"
                self.store.save()
            self.event(f"Failed to create disk {disk['name']}: {e}", severity="error")
            return
        with self.store.lock:
            disk["status"] = "ok"
            self.store.save()

    def remove_disk(self, disk_id: str) -> None:
        with self.store.lock:
            disk = self.get("disks", disk_id)
            if disk["status"] == "locked":
                raise conflict(f"Cannot remove Virtual Disk. Disk {disk['name']} is locked. Please try again later.")
            vm = self.vm_of_disk(disk_id)
            if vm and vm["status"] != "down":
                raise conflict(f"Cannot remove Virtual Disk. VM {vm['name']} is running.")
            if vm:
                vm["disk_attachments"] = [a for a in vm["disk_attachments"] if a["disk_id"] != disk_id]
            for snap in self.store["snapshots"].values():
                snap["volumes"].pop(disk_id, None)
            del self.store["disks"][disk_id]
            sd = self.store["storagedomains"][disk["sd_id"]]
            self.store.save()
        shutil.rmtree(Path(sd["path"]) / "images" / disk_id, ignore_errors=True)

    def _unlock_disk(self, disk_id: str, status: str = "ok") -> None:
        disk = self.store["disks"].get(disk_id)
        if disk and disk["status"] == "locked":
            disk["status"] = status

    def refresh_disk_format(self, disk: dict) -> None:
        # The engine reports the format of the active volume: a RAW disk with a snapshot is QCOW2.
        disk["format"] = disk["volumes"][-1]["format"]

    # ----- guest writes -------------------------------------------------------------------

    def guest_write(self, ident: str, offset: int, data: bytes) -> None:
        """Write as the running guest would: into the active volume, through qemu."""
        from ovirt_imageio._internal import nbd

        with self.store.lock:
            if ident in self.store["vms"]:
                vm = self.store["vms"][ident]
                attachments = sorted(vm["disk_attachments"], key=lambda a: not a["bootable"])
                if not attachments:
                    raise bad_request(f"VM {vm['name']} has no disks")
                ident = attachments[0]["disk_id"]
            disk = self.get("disks", ident)
            if offset < 0 or offset + len(data) > disk["provisioned_size"]:
                raise bad_request(f"write of {len(data)} bytes at {offset} is outside disk {disk['name']}")
        with self._volume_locks[disk["id"]]:  # a merge may replace the active volume meanwhile
            with self.store.lock:
                if disk["status"] == "illegal":
                    raise conflict(f"disk {disk['name']} is illegal")
                top = disk["volumes"][-1]
                path = self.volume_path(disk, top["id"])
            server = qemu.NbdServer(
                path,
                self.run_dir / f"g-{uuid.uuid4().hex[:8]}.sock",
                fmt="qcow2" if top["format"] == "cow" else "raw",
                read_only=False,
            )
            server.start()
            try:
                with nbd.open(urllib.parse.urlparse(server.url)) as client:
                    client.write(offset, data)
                    client.flush()
            finally:
                server.stop()

    # ----- VMs ----------------------------------------------------------------------------

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

    def add_vm(self, spec, *, clone: bool = False) -> dict:
        configuration = spec.initialization.configuration if spec.initialization else None
        if configuration is not None and configuration.data:
            return self._add_vm_from_ovf(spec, configuration, clone=clone)
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
            vm = self._new_vm(
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
            self.store.save()
            return vm

    # ----- tags ----------------------------------------------------------------------------

    def add_tag(self, spec) -> dict:
        with self.store.lock:
            if not spec.name:
                raise bad_request("Cannot add Tag. The tag name is required (name).")
            if any(t["name"] == spec.name for t in self.store["tags"].values()):
                raise conflict("Cannot add Tag. Tag name is in use.")
            parent = self.get("tags", spec.parent.id)["id"] if spec.parent is not None and spec.parent.id else None
            tag = {"id": new_id(), "name": spec.name, "description": spec.description or "", "parent": parent}
            self.store["tags"][tag["id"]] = tag
            self.store.save()
            return tag

    def remove_tag(self, tag_id: str) -> None:
        with self.store.lock:
            self.get("tags", tag_id)
            del self.store["tags"][tag_id]
            for vm in self.store["vms"].values():
                if tag_id in vm["tags"]:
                    vm["tags"].remove(tag_id)
            self.store.save()

    def assign_vm_tag(self, vm_id: str, spec) -> dict:
        """Tag a VM with an existing tag, named by id or by name, as the engine accepts either."""
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if spec.id:
                tag = self.get("tags", spec.id)
            else:
                tag = next((t for t in self.store["tags"].values() if t["name"] == spec.name), None)
                if tag is None:
                    raise not_found("tags", spec.name or "")
            if tag["id"] not in vm["tags"]:
                vm["tags"].append(tag["id"])
                self.store.save()
            return tag

    def unassign_vm_tag(self, vm_id: str, tag_id: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if tag_id not in vm["tags"]:
                raise not_found("tags", tag_id)
            vm["tags"].remove(tag_id)
            self.store.save()

    def remove_vm(self, vm_id: str, *, detach_only: bool = False) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if vm["status"] != "down":
                raise conflict(f"Cannot remove VM. VM {vm['name']} is running.")
            disks = [self.store["disks"][a["disk_id"]] for a in vm["disk_attachments"]]
            if any(d["status"] == "locked" for d in disks):
                raise conflict(f"Cannot remove VM: Disk of VM {vm['name']} is locked. Please try again later.")
            if any(s["vm_id"] == vm_id and s["status"] == "locked" for s in self.store["snapshots"].values()):
                raise conflict(f"Cannot remove VM. Snapshot of VM {vm['name']} is currently being created or removed.")
            # Removing the VM removes its snapshots: collapse each disk's chain first when disks stay.
            for snap_id in [s["id"] for s in self.store["snapshots"].values() if s["vm_id"] == vm_id]:
                del self.store["snapshots"][snap_id]
            del self.store["vms"][vm_id]
            self.event(f"VM {vm['name']} was removed by admin@internal-authz.", code=113, vm_id=vm_id)
            self.store.save()
        for disk in disks:
            if detach_only:
                self._collapse_chain(disk["id"])
            else:
                self.remove_disk(disk["id"])

    def _collapse_chain(self, disk_id: str) -> None:
        """Merge every layer into the base, leaving a single-volume disk (a detached disk has no snapshots)."""
        with self.store.lock:
            disk = self.store["disks"][disk_id]
            disk["status"] = "locked"
        try:
            while len(disk["volumes"]) > 1:
                self._merge_volume(disk, 1)
        finally:
            with self.store.lock:
                disk["status"] = "ok"
                self.refresh_disk_format(disk)
                self.store.save()

    def vm_action(self, vm_id: str, action: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if action == "start":
                if vm["status"] == "up":
                    raise conflict(f"Cannot run VM. VM {vm['name']} is running.")
                if any(self.store["disks"][a["disk_id"]]["status"] == "illegal" for a in vm["disk_attachments"]):
                    raise conflict(f"Cannot run VM. VM {vm['name']} has an illegal disk.")
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
                self._spawn(self._settle_vm, vm_id, "up")
            elif action in ("stop", "shutdown"):
                if vm["status"] == "down":
                    raise conflict(f"Cannot stop VM. VM {vm['name']} is not running.")
                if action == "stop":
                    vm["status"], vm["host_id"] = "down", None
                else:
                    vm["status"] = "powering_down"
                    self._spawn(self._settle_vm, vm_id, "down")
            else:
                raise bad_request(f"Unknown action {action}")
            self.store.save()

    def _settle_vm(self, vm_id: str, status: str) -> None:
        time.sleep(self.async_delay * 4)
        with self.store.lock:
            vm = self.store["vms"].get(vm_id)
            if vm:
                vm["status"] = status
                if status == "down":
                    vm["host_id"] = None
                self.store.save()

    # ----- disk attachments ---------------------------------------------------------------

    def add_attachment(self, vm_id: str, spec) -> dict:
        if spec.disk is None:
            raise bad_request("disk_attachment.disk is required")
        if spec.disk.snapshot is not None and spec.disk.snapshot.id:
            # Say so plainly rather than answer as if the disk itself were being attached.
            raise EngineFault(
                501,
                "Attaching a disk snapshot to another VM (a backup appliance) is not simulated yet.",
                reason="Not Implemented",
            )
        if not spec.disk.id and spec.disk.provisioned_size:
            disk = self.add_disk(spec.disk)
        else:
            disk = self.get("disks", spec.disk.id)
        with self.store.lock:
            vm = self.get("vms", vm_id)
            owner = self.vm_of_disk(disk["id"])
            if owner is not None and not disk["shareable"]:
                raise conflict(
                    f"Cannot attach Virtual Disk. The disk {disk['name']} is already attached to VM {owner['name']}."
                )
            attachment = {
                "disk_id": disk["id"],
                "interface": spec.interface.value if spec.interface else "virtio_scsi",
                "bootable": bool(spec.bootable),
                "active": True if spec.active is None else bool(spec.active),
                "pass_discard": bool(spec.pass_discard),
                "read_only": bool(spec.read_only),
            }
            vm["disk_attachments"].append(attachment)
            self.store.save()
            return attachment

    def get_attachment(self, vm_id: str, disk_id: str) -> dict:
        vm = self.get("vms", vm_id)
        for a in vm["disk_attachments"]:
            if a["disk_id"] == disk_id:
                return a
        raise not_found("diskattachments", disk_id)

    def update_attachment(self, vm_id: str, disk_id: str, spec) -> dict:
        with self.store.lock:
            attachment = self.get_attachment(vm_id, disk_id)
            if spec.active is not None:
                attachment["active"] = bool(spec.active)
            if spec.bootable is not None:
                attachment["bootable"] = bool(spec.bootable)
            if spec.interface is not None:
                attachment["interface"] = spec.interface.value
            self.store.save()
            return attachment

    def remove_attachment(self, vm_id: str, disk_id: str, *, detach_only: bool = True) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            attachment = self.get_attachment(vm_id, disk_id)
            disk = self.store["disks"][disk_id]
            if disk["status"] == "locked":
                raise conflict(f"Cannot detach Virtual Disk. Disk {disk['name']} is locked. Please try again later.")
            if vm["status"] != "down" and attachment["active"]:
                raise conflict(
                    "Cannot detach Virtual Disk. The disk is plugged into a running VM; deactivate it first."
                )
            vm["disk_attachments"].remove(attachment)
            self.store.save()
        if not detach_only:
            self.remove_disk(disk_id)
        elif len(disk["volumes"]) > 1:
            self._collapse_chain(disk_id)

    # ----- snapshots ----------------------------------------------------------------------

    def vm_snapshots(self, vm_id: str) -> list[dict]:
        self.get("vms", vm_id)
        return sorted(
            (s for s in self.store["snapshots"].values() if s["vm_id"] == vm_id),
            key=lambda s: (s["type"] != "active", s["date"]),
        )

    def add_snapshot(self, vm_id: str, spec, *, require_consistency: bool = False) -> dict:
        with self.store.lock:
            vm = self.get("vms", vm_id)
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
            snap_id = new_id()
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
            fail = self.faults.fail_next_snapshot
            self.faults.fail_next_snapshot = False
            self.store.save()
        self._spawn(self._create_snapshot_layers, snap_id, new_volumes, fail, job_id)
        return snap

    def _create_snapshot_layers(self, snap_id: str, new_volumes: dict[str, str], fail: bool, job_id: str) -> None:
        time.sleep(self.async_delay)
        with self.store.lock:
            snap = self.store["snapshots"][snap_id]
            vm = self.store["vms"][snap["vm_id"]]
            disks = [self.store["disks"][d] for d in new_volumes]
        created = []
        try:
            if fail:
                raise qemu.QemuError("simulated failure (fault switch fail_next_snapshot)")
            for disk in disks:
                top = self.volume_path(disk, self.top_volume(disk))
                path = self.volume_path(disk, new_volumes[disk["id"]])
                qemu.create(path, fmt="qcow2", size=disk["provisioned_size"], backing=top)
                created.append((disk, path))
        except qemu.QemuError as e:
            for _, path in created:
                path.unlink(missing_ok=True)
            with self.store.lock:
                del self.store["snapshots"][snap_id]
                for disk in disks:
                    disk["status"] = "ok"
                self._end_job(job_id, False)
                self.store.save()
            self.event(
                f"Failed to complete snapshot '{snap['description']}' creation for VM '{vm['name']}': {e}",
                severity="error",
                code=69,
                vm_id=vm["id"],
            )
            return
        with self.store.lock:
            for disk in disks:
                disk["volumes"].append({"id": new_volumes[disk["id"]], "format": "cow"})
                self.refresh_disk_format(disk)
                disk["status"] = "ok"
            snap["status"] = "ok"
            self._end_job(job_id, True)
            self.store.save()
        self.event(
            f"Snapshot '{snap['description']}' creation for VM '{vm['name']}' has been completed.",
            code=68,
            vm_id=vm["id"],
        )

    def remove_snapshot(self, vm_id: str, snap_id: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            snap = self.get("snapshots", snap_id)
            if snap["vm_id"] != vm_id:
                raise not_found("snapshots", snap_id)
            if snap["type"] == "active":
                raise conflict("Cannot remove Snapshot. The active snapshot of a VM cannot be removed.")
            if snap["status"] == "locked":
                raise conflict(
                    f"Cannot remove Snapshot. Snapshot is currently being created or removed for VM {vm['name']}."
                )
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

    def _merge_volume(self, disk: dict, index: int) -> None:
        """Merge volume `index` into its parent (index - 1); the parent takes the child's place."""
        with self.store.lock:
            child = disk["volumes"][index]
            parent = disk["volumes"][index - 1]
            child_path = self.volume_path(disk, child["id"])
            parent_path = self.volume_path(disk, parent["id"])
            grandchild = disk["volumes"][index + 1] if index + 1 < len(disk["volumes"]) else None
        with self._volume_locks[disk["id"]]:
            qemu.commit(child_path)
            if grandchild is not None:
                qemu.rebase_unsafe(self.volume_path(disk, grandchild["id"]), parent_path)
            with self.store.lock:
                disk["volumes"].pop(index)
                for snap in self.store["snapshots"].values():
                    if snap["volumes"].get(disk["id"]) == child["id"]:
                        snap["volumes"][disk["id"]] = parent["id"]
                self.store.save()
        child_path.unlink(missing_ok=True)

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
                    self._merge_volume(disk, index + 1)
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
                snap["status"] = "ok"
                self._end_job(job_id, False)
            else:
                del self.store["snapshots"][snap_id]
                self._end_job(job_id, True)
            self.store.save()
        if failed:
            self.event(
                f"Failed to delete snapshot '{snap['description']}' for VM '{vm['name']}': {failed}",
                severity="error",
                code=357,
                vm_id=vm["id"],
            )
        else:
            self.event(
                f"Snapshot '{snap['description']}' deletion for VM '{vm['name']}' has been completed.",
                code=356,
                vm_id=vm["id"],
            )

    # ----- OVF ----------------------------------------------------------------------------

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
            )
        )

    # ----- image transfers ----------------------------------------------------------------

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
            path = self.volume_path(disk, volume["id"])
            size = disk["provisioned_size"]
        if pause:
            with self.store.lock:
                transfer["phase"] = "paused_system"
                self.store.save()
            self.event(
                f"Image transfer for disk {disk['name']} was paused by the system.", severity="warning", code=1032
            )
            return
        ticket_id = new_id()
        ops = ["read"] if transfer["direction"] == "download" else ["read", "write"]
        try:
            if transfer["format"] == "raw":
                server = qemu.NbdServer(
                    path,
                    self.run_dir / f"t-{ticket_id[:8]}.sock",
                    fmt="qcow2" if volume["format"] == "cow" else "raw",
                    read_only=transfer["direction"] == "download",
                    shallow=transfer["shallow"],
                )
                server.start()
                self._nbd[transfer_id] = server
                url = server.url
            else:
                url = f"file://{path}"
                # An upload needs room for the qcow2 metadata the client sends along with the data.
                size = path.stat().st_size if transfer["direction"] == "download" else size + size // 8 + 64 * MiB
            self.imageio.add_ticket(
                {
                    "uuid": ticket_id,
                    "size": size,
                    "url": url,
                    "timeout": 24 * 3600,
                    "ops": ops,
                    "inactivity_timeout": transfer["inactivity_timeout"],
                    "sparse": True,
                    "dirty": False,
                    "transfer_id": transfer_id,
                }
            )
        except Exception as e:
            self._stop_nbd(transfer_id)
            with self.store.lock:
                transfer["phase"] = "finished_failure"
                transfer["finished"] = now_iso()
                self._unlock_disk(transfer["disk_id"])
                self.store.save()
            self.event(f"Image transfer for disk {disk['name']} failed to start: {e}", severity="error", code=1033)
            return
        with self.store.lock:
            if transfer["phase"] != "initializing":  # cancelled meanwhile
                self._spawn(self._close_transfer, transfer_id, False)
                return
            transfer["ticket"] = ticket_id
            transfer["transfer_url"] = f"{self.imageio.images_url}/{ticket_id}"
            transfer["proxy_url"] = transfer["transfer_url"]
            transfer["phase"] = "transferring"
            transfer["last_activity"] = time.monotonic()
            self.store.save()

    def _stop_nbd(self, transfer_id: str) -> None:
        server = self._nbd.pop(transfer_id, None)
        if server:
            server.stop()

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
                self.imageio.remove_ticket(ticket)
            except Exception as e:
                error = f"removing the ticket failed: {e}"
        self._stop_nbd(transfer_id)
        new_disk_status = "ok"
        if success and transfer["direction"] == "upload" and error is None:
            try:
                qemu.check(self.volume_path(disk, transfer["volume_id"]))
            except qemu.QemuError as e:
                error = f"the uploaded image is not valid: {e}"
                new_disk_status = "illegal"
        remove_disk = False
        with self.store.lock:
            if success and error is None:
                transfer["phase"] = "finished_success"
            else:
                transfer["phase"] = "finished_failure"
                # An upload that did not complete leaves nothing usable: the engine removes the disk.
                remove_disk = transfer["direction"] == "upload" and not success
            transfer["finished"] = now_iso()
            transfer["ticket"] = None
            self._unlock_disk(transfer["disk_id"], new_disk_status)
            self.store.save()
        if remove_disk:
            try:
                self.remove_disk(transfer["disk_id"])
            except EngineFault:
                pass
        if error:
            self.event(f"Image transfer for disk {disk['name']} failed: {error}", severity="error", code=1033)
        else:
            verb = "Download" if transfer["direction"] == "download" else "Upload"
            self.event(f"{verb} of disk {disk['name']} {'completed' if success else 'was cancelled'}.", code=1031)

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
