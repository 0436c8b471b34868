"""The engine's shared core: state, life cycle, worker threads and lookups.

The Engine keeps the state in a Store and mutates it under the store's lock. Work on
images (qemu-img, qemu-nbd, imageio tickets) runs outside the lock in worker threads, and
the entity it works on is marked locked meanwhile, as the real engine does.

What the engine does with each collection lives in its own module (vms.py, disks.py, ...),
as a subclass of EngineCore; `ovirtsim.engine.Engine` combines them into one object, so a
collection's code calls another's through `self` (a VM removal removes its disks).
"""

import datetime
import logging
import secrets
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ovirtsim import qemu
from ovirtsim.errors import bad_request, not_found
from ovirtsim.imageio import ImageioDaemon
from ovirtsim.store import Store
from ovirtsim.vm_qemu import DiskChain, VmQemu

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
    # Seconds a finalized VM backup stays in `finalizing` before it succeeds (a slow vdsm).
    finalize_backup_delay: float = 0.0


class EngineCore:
    """The state every collection shares: the store, the data plane's daemons, worker threads."""

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
        # The qemu of each running VM (vm id -> VmQemu), as a host's libvirt holds them.
        self.vm_qemus: dict[str, VmQemu] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.request_count = 0

    # ----- life cycle ------------------------------------------------------------------

    @property
    def password(self) -> str:
        meta = self.store.meta
        if "admin_password" not in meta:
            meta["admin_password"] = secrets.token_urlsafe(12)
            self.store.save()
        return meta["admin_password"]

    def start_monitor(self) -> None:
        """Start the engine's background monitors (each collection adds its own)."""

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
            for vm in self.store["vms"].values():
                if vm["status"] == "powering_up":
                    vm["status"] = "up"
                elif vm["status"] == "powering_down":
                    vm["status"], vm["host_id"] = "down", None
            self.store.save()

    def start_vm_qemus(self) -> None:
        """After a (re)start: the VMs recorded as running get their qemu back, as after a host reboot."""
        with self.store.lock:
            running = [vm_id for vm_id, vm in self.store["vms"].items() if vm["status"] == "up"]
        for vm_id in running:
            try:
                self.start_vm_qemu(vm_id)
            except qemu.QemuError as e:
                with self.store.lock:
                    vm = self.store["vms"][vm_id]
                    vm["status"], vm["host_id"] = "down", None
                    self.event(
                        f"VM {vm['name']} is down with error. Exit message: {e}.",
                        severity="error",
                        code=119,
                        vm_id=vm_id,
                    )
                    self.store.save()

    def stop(self) -> None:
        self._stopping.set()
        for t in list(self._threads):
            t.join(timeout=30)
        # The VMs stay "up" in the store: their qemu comes back with the simulator.
        for vm_qemu in list(self.vm_qemus.values()):
            try:
                vm_qemu.stop()
            except qemu.QemuError:
                log.exception("stopping the qemu of VM %s failed", vm_qemu.vm_id)
        self.vm_qemus.clear()
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

    # ----- lookups ---------------------------------------------------------------------

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

    def store_actual(self, disk: dict, volume_id: str) -> int:
        return qemu.actual_size(self.volume_path(disk, volume_id))

    # ----- running VMs' qemu ------------------------------------------------------------

    def disk_chain(self, disk: dict) -> DiskChain:
        return DiskChain(
            disk["id"],
            [
                (v["id"], self.volume_path(disk, v["id"]), "qcow2" if v["format"] == "cow" else "raw")
                for v in disk["volumes"]
            ],
        )

    def start_vm_qemu(self, vm_id: str) -> VmQemu:
        """Start the VM's qemu holding its active disk attachments (the caller marks it up)."""
        with self.store.lock:
            vm = self.store["vms"][vm_id]
            chains = [self.disk_chain(self.store["disks"][a["disk_id"]]) for a in vm["disk_attachments"] if a["active"]]
            vm_qemu = self.vm_qemus.get(vm_id) or VmQemu(vm_id, self.run_dir)
            self.vm_qemus[vm_id] = vm_qemu
        vm_qemu.start(chains)
        return vm_qemu

    def stop_vm_qemu(self, vm_id: str, *, crash: bool = False) -> None:
        vm_qemu = self.vm_qemus.pop(vm_id, None)
        if vm_qemu is not None:
            vm_qemu.crash() if crash else vm_qemu.stop()

    def qemu_of_disk(self, disk_id: str) -> VmQemu | None:
        """The running qemu this disk is plugged into, if any (then only qemu may touch its volumes)."""
        for vm_qemu in list(self.vm_qemus.values()):  # other threads start and stop VMs
            if vm_qemu.running and vm_qemu.has_disk(disk_id):
                return vm_qemu
        return None

    def vm_of_disk(self, disk_id: str) -> dict | None:
        for vm in self.store["vms"].values():
            if any(a["disk_id"] == disk_id for a in vm["disk_attachments"]):
                return vm
        return None
