"""The engine's shared core: state, life cycle, worker threads and lookups.

The Engine keeps the state in a Store and mutates it under the store's lock. Work on
images (qemu-img, qemu-nbd, imageio tickets) runs outside the lock in worker threads, and
the entity it works on is marked locked meanwhile, as the real engine does.

What the engine does with each collection lives in its own module (vms.py, disks.py, ...),
as a subclass of EngineCore; `ovirtsim.engine.Engine` combines them into one object, so a
collection's code calls another's through `self` (a VM removal removes its disks).
"""

import contextlib
import datetime
import logging
import os
import random
import secrets
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ovirtsim import guest_devices, lvm, qemu, storage_net, volume_meta
from ovirtsim.errors import bad_request, not_found
from ovirtsim.imageio import ImageioDaemon
from ovirtsim.store import Store
from ovirtsim.vm_qemu import DiskChain, VmQemu

log = logging.getLogger("ovirtsim")

GiB = 1024**3
MiB = 1024**2
FINAL_PHASES = {"finished_success", "finished_failure", "finished_cleanup", "cancelled"}
DEFAULT_STORAGE_CAPACITY = 512 * GiB
# One lazily made image at a time (two readers of a seeded disk must not both create it).
_materializing = threading.Lock()


def new_id() -> str:
    return str(uuid.uuid4())


def snapshot_disk_name(disk_id: str) -> str:
    """The name a VM's qemu gives another VM's disk snapshot attached to it (never the disk's own id:
    that one names the disk in the qemu of the VM it belongs to)."""
    return f"snapshot-{disk_id}"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Faults:
    """Switches tests flip to make the engine misbehave the way real ones do."""

    fail_next_snapshot: bool = False
    # The next VM started never gets past powering_up (a guest stuck before its OS runs).
    hang_next_vm_start: bool = False
    pause_next_transfer: bool = False
    delay_ms: int = 0
    reject_logins: bool = False
    # Seconds a finalized VM backup stays in `finalizing` before it succeeds (a slow vdsm).
    finalize_backup_delay: float = 0.0
    # A share of API requests refused before the engine acts on them, as a busy or failing engine
    # does: {"rate": 0.05, "status": 409 | 500 | 503, "methods": ["POST", ...], "seed": 1}; {} is off.
    fail_requests: dict = field(default_factory=dict)
    # Disk moves (disk_moves.py): the copy's and the live mirror's speed in bytes/s (0: no limit), every
    # write to a target volume failing with ENOSPC (blkdebug under it), only the live mirror's writes
    # failing so, the target domain reported full.
    move_speed: int = 0
    move_target_enospc: bool = False
    move_mirror_enospc: bool = False
    move_target_full: bool = False
    # A live move's mirror stays at "ready" without pivoting while set (a mirror slow to converge): a
    # test sees the move mid-way for as long as it needs, whatever the machine's load.
    hold_move_pivot: bool = False


class EngineCore:
    """The state every collection shares: the store, the data plane's daemons, worker threads."""

    def __init__(
        self,
        state_dir: Path,
        *,
        imageio: ImageioDaemon | None,
        imageio_proxy: ImageioDaemon | None = None,
        run_dir: Path | None = None,
        async_delay: float = 0.05,
    ):
        self.dir = Path(state_dir)
        # Unix socket paths are limited to 107 bytes, so sockets live in a short runtime directory.
        self.run_dir = Path(run_dir) if run_dir else self.dir / "run"
        self.store = Store(self.dir / "state.json")
        self.imageio = imageio  # the hosts' daemon
        self.imageio_proxy = imageio_proxy  # the engine's imageio proxy
        self.async_delay = async_delay
        self.faults = Faults()
        # Block storage domains' VGs and LVs, and which host has which LV active.
        self.lvm = lvm.Lvm(self.dir)
        self.tokens: dict[str, str] = {}
        self._nbd: dict[str, qemu.NbdServer] = {}
        # A live merge and a guest write touch the same volume files: on a host qemu serializes
        # them inside one process; here they are separate qemu processes, so a lock per disk.
        self._volume_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # The qemu of each running VM (vm id -> VmQemu), as a host's libvirt holds them.
        self.vm_qemus: dict[str, VmQemu] = {}
        # The block devices of the VMs running here (vm id -> qemu disk name -> device), see
        # guest_devices.py; changed under the store's lock.
        self.guest_devices: dict[str, dict[str, dict]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.request_count = 0
        # The requests `fail_requests` refused, by status (what a soak reports as faults injected).
        self.failed_requests: defaultdict[int, int] = defaultdict(int)
        self.fault_random = random.Random()
        # The hosts' storage network (storage_net.py), where they do NFS; None: none (not root).
        self.storage_netns: Path | None = None

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
        # The loop devices and FUSE mounts of a killed run's guests (their qemus died with it).
        guest_devices.cleanup(self.dir)
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
        for vm_id in list(self.guest_devices):
            self.release_guest_devices(vm_id)
        for vm_qemu in list(self.vm_qemus.values()):
            try:
                vm_qemu.stop()
            except qemu.QemuError:
                log.exception("stopping the qemu of VM %s failed", vm_qemu.vm_id)
        self.vm_qemus.clear()
        for server in list(self._nbd.values()):
            server.stop()
        self._nbd.clear()
        self.lvm.stop()

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

    def volume_path(self, disk: dict, volume_id: str, *, host_id: str | None = None, make: bool = True) -> Path:
        """Where the volume is: its file, or on a block domain its LV's device node on the host
        doing the work (it exists while the LV is active there: see `prepared`). A seeded record's
        image (`large`, `scale:N`) is made here when first asked for, unless `make` is False."""
        sd = self.store["storagedomains"][disk["sd_id"]]
        if sd.get("lvm"):
            return self.lvm.lv_path(host_id or self.lv_host(disk), sd["id"], volume_id)
        path = Path(sd["path"]) / "images" / disk["id"] / volume_id
        if make and disk.get("lazy") and volume_id == disk["volumes"][0]["id"] and not path.exists():
            with _materializing:
                if not path.exists():
                    self._materialize(disk, path)
        return path

    def _materialize(self, disk: dict, path: Path) -> None:
        """A seeded record's image (`large`, `scale:N`), made empty and thin when first needed, as
        the engine would have made it at the disk's creation."""
        fmt = "qcow2" if disk["volumes"][0]["format"] == "cow" else "raw"
        qemu.create(path, fmt=fmt, size=disk["provisioned_size"])
        volume_meta.write_disk_meta(self, disk)

    def top_volume(self, disk: dict) -> str:
        return disk["volumes"][-1]["id"]

    def volume_sparse(self, disk: dict, volume_id: str) -> bool:
        """Whether a volume is thin, as the engine reports it (a disk's `sparse` is its active volume's):
        the base has the disk's allocation, and every snapshot layer above it is a thin QCOW2 (the
        engine's CreateSnapshotCommand makes them so), so a preallocated disk with a snapshot is sparse."""
        return disk["sparse"] if disk["volumes"][0]["id"] == volume_id else True

    def store_actual(self, disk: dict, volume_id: str) -> int:
        if self.on_lvm(disk):
            # A block volume's actual size is its LV's size, as the engine reports it.
            return next((v.get("lv_size", 0) for v in disk["volumes"] if v["id"] == volume_id), 0)
        # A seeded image not yet made occupies nothing; asking its size must not make it.
        return qemu.actual_size(self.volume_path(disk, volume_id, make=False))

    # ----- block domains (LVM) ---------------------------------------------------------

    def on_lvm(self, disk: dict) -> bool:
        sd = self.store["storagedomains"].get(disk["sd_id"])
        return bool(sd and sd.get("lvm"))

    def spm_host_id(self) -> str:
        hosts = list(self.store["hosts"].values())
        spm = next((h for h in hosts if h.get("spm")), None) or next((h for h in hosts if h["status"] == "up"), None)
        return spm["id"] if spm else "spm"

    def lv_host(self, disk: dict) -> str:
        """The host that touches the disk's LVs: the one its VM runs on, else the SPM (as vdsm)."""
        vm = self.vm_of_disk(disk["id"])
        if vm is not None and vm.get("host_id") and vm["status"] != "down":
            return vm["host_id"]
        return self.spm_host_id()

    def chain_up_to(self, disk: dict, volume_id: str | None = None) -> list[str]:
        ids = [v["id"] for v in disk["volumes"]]
        return ids[: ids.index(volume_id) + 1] if volume_id else ids

    def activate_chain(self, disk: dict, volume_ids: list[str], *, host_id: str, holder: str) -> None:
        """vdsm's prepareImage: the volumes (a chain, base first) active on the host for `holder`."""
        done = []
        try:
            for volume_id in volume_ids:
                self.lvm.activate(host_id, disk["sd_id"], volume_id, holder=holder)
                done.append(volume_id)
        except lvm.LvmError:
            for volume_id in done:
                self.lvm.deactivate(host_id, disk["sd_id"], volume_id, holder=holder)
            raise

    def sync_vm_activation(self, vm_id: str) -> None:
        """A running VM holds the LVs of its active disks' chains on its host (its qemu has them open);
        a VM that is down holds none."""
        holder = f"vm:{vm_id}"
        with self.store.lock:
            vm = self.store["vms"].get(vm_id)
            wanted: list[tuple[dict, list[str]]] = []
            host_id = vm.get("host_id") if vm and vm["status"] != "down" else None
            if host_id:
                for a in vm["disk_attachments"]:
                    disk = self.store["disks"].get(a["disk_id"])
                    if disk and a["active"] and self.on_lvm(disk) and disk["status"] != "illegal":
                        wanted.append((disk, self.chain_up_to(disk)))
                for a in vm.get("snapshot_attachments", []):  # other VMs' disk snapshots: up to them
                    disk = self.store["disks"].get(a["disk_id"])
                    if disk and a["active"] and self.on_lvm(disk):
                        wanted.append((disk, self.chain_up_to(disk, self.attached_volume(a))))
        keep = set()
        for disk, ids in wanted:
            self.activate_chain(disk, ids, host_id=host_id, holder=holder)
            keep |= {(host_id, disk["sd_id"], v) for v in ids}
        for host, vg, lv in self.lvm.held_by(holder):
            if (host, vg, lv) not in keep:
                self.lvm.deactivate(host, vg, lv, holder=holder)

    @contextlib.contextmanager
    def prepared(self, disk: dict, volume_ids: list[str] | None = None, *, host_id: str | None = None):
        """The disk's chain (or `volume_ids`) active for the duration, deactivated after unless someone
        else holds it; yields the host id. Nothing to do on file domains."""
        if not self.on_lvm(disk):
            yield None
            return
        with self.store.lock:
            host_id = host_id or self.lv_host(disk)
            ids = volume_ids if volume_ids is not None else self.chain_up_to(disk)
        holder = f"engine:{uuid.uuid4().hex[:12]}"
        self.activate_chain(disk, ids, host_id=host_id, holder=holder)
        try:
            yield host_id
        finally:
            self.lvm.release_holder(holder)

    # ----- running VMs' qemu ------------------------------------------------------------

    def nfs_share(self, sd: dict | None) -> qemu.NfsShare | None:
        """The NFS share a data domain is on, when the hosts reach it over NFS: an NFS data domain served
        from this machine (a loopback address: a node here exports it, e.g. an instant restore's share,
        imported), whose `path` (SHARE/SD_ID) is the share's directory here. Others (the seeded
        nfs.example.internal ones) are simulated by local directories: None."""
        if not sd or sd["type"] != "data" or sd.get("storage_type") != "nfs" or sd.get("lvm"):
            return None
        if not (sd.get("export_path") and storage_net.is_loopback(sd.get("address") or "")):
            return None
        return qemu.NfsShare(sd["address"], sd["export_path"], Path(sd["path"]).parent)

    def own_on_share(self, disk: dict, path: Path) -> None:
        """A volume the engine made on an NFS data domain served from here belongs to vdsm:kvm, 0660,
        as vdsm makes them: the hosts' qemu reads and writes it over NFS as 36:36 (every export of a
        node squashes to them). Not root: left as it is."""
        share = self.nfs_share(self.store["storagedomains"].get(disk["sd_id"]))
        if share is not None and share.holds(path) and os.geteuid() == 0:
            os.chown(path, qemu.NFS_UID, qemu.NFS_GID)
            path.chmod(0o660)

    def disk_chain(self, disk: dict) -> DiskChain:
        return DiskChain(
            disk["id"],
            [
                (v["id"], self.volume_path(disk, v["id"]), "qcow2" if v["format"] == "cow" else "raw")
                for v in disk["volumes"]
            ],
            # A RAW LV is rounded up to whole extents: the guest sees the disk's own size.
            size=disk["provisioned_size"] if self.on_lvm(disk) else None,
            nfs=self.nfs_share(self.store["storagedomains"].get(disk["sd_id"])),
        )

    def attached_volume(self, attachment: dict) -> str:
        """The volume a disk-snapshot attachment shows: its snapshot's image of the disk."""
        snap = self.store["snapshots"].get(attachment["snapshot_id"])
        return (snap or {}).get("volumes", {}).get(attachment["disk_id"]) or attachment["volume_id"]

    def snapshot_chain(self, vm: dict, attachment: dict) -> DiskChain:
        """Another VM's disk snapshot as this VM's qemu opens it: the chain up to the snapshot's volume,
        read-only. A writable attachment gets a transient overlay on top, as vdsm makes one: the
        guest's writes go there and are dropped when it is unplugged."""
        disk = self.store["disks"][attachment["disk_id"]]
        ids = self.chain_up_to(disk, self.attached_volume(attachment))
        host_id = vm.get("host_id") if self.on_lvm(disk) else None
        volumes = [
            (
                v["id"],
                self.volume_path(disk, v["id"], host_id=host_id),
                "qcow2" if v["format"] == "cow" else "raw",
            )
            for v in disk["volumes"]
            if v["id"] in ids
        ]
        name = snapshot_disk_name(disk["id"])
        if not attachment["read_only"]:
            overlay = guest_devices.transient_dir(self.dir, vm["id"]) / f"{name}.qcow2"
            overlay.unlink(missing_ok=True)
            qemu.create(overlay, fmt="qcow2", size=disk["provisioned_size"])
            volumes.append((name, overlay, "qcow2"))
        return DiskChain(
            name,
            volumes,
            size=disk["provisioned_size"] if self.on_lvm(disk) else None,
            read_only=attachment["read_only"],
            nfs=self.nfs_share(self.store["storagedomains"].get(disk["sd_id"])),  # the overlay stays local
        )

    # Hooks for the VMs running here (their guests' block devices): DiskAttachments fills them in.
    def sync_guest_devices(self, vm_id: str) -> None:
        pass

    def release_guest_devices(self, vm_id: str, *, crashed: bool = False) -> None:
        pass

    def start_vm_qemu(self, vm_id: str) -> VmQemu:
        """Start the VM's qemu holding its active disk attachments (the caller marks it up)."""
        try:
            # Its LVs first (block domains): active on its host while it runs, opened by its qemu.
            self.sync_vm_activation(vm_id)
        except lvm.LvmError as e:
            self.lvm.release_holder(f"vm:{vm_id}")
            raise qemu.QemuError(str(e)) from None
        try:
            vm_qemu = self._start_vm_qemu(vm_id)
            self.sync_guest_devices(vm_id)
            return vm_qemu
        except BaseException:
            self.release_guest_devices(vm_id)
            running = self.vm_qemus.pop(vm_id, None)
            if running is not None:
                running.stop()
            self.lvm.release_holder(f"vm:{vm_id}")
            raise

    def _start_vm_qemu(self, vm_id: str) -> VmQemu:
        with self.store.lock:
            vm = self.store["vms"][vm_id]
            chains = [self.disk_chain(self.store["disks"][a["disk_id"]]) for a in vm["disk_attachments"] if a["active"]]
            chains += [self.snapshot_chain(vm, a) for a in vm.get("snapshot_attachments", []) if a["active"]]
            vm_qemu = self.vm_qemus.get(vm_id) or VmQemu(vm_id, self.run_dir, netns=self.storage_netns)
            self.vm_qemus[vm_id] = vm_qemu
        vm_qemu.start(chains)
        return vm_qemu

    def stop_vm_qemu(self, vm_id: str, *, crash: bool = False) -> None:
        if not crash:
            self.release_guest_devices(vm_id)  # the guest's devices go before its disks are closed
        vm_qemu = self.vm_qemus.pop(vm_id, None)
        if vm_qemu is not None:
            vm_qemu.crash() if crash else vm_qemu.stop()
        if crash:
            self.release_guest_devices(vm_id, crashed=True)  # over exports that died with the qemu
        self.lvm.release_holder(f"vm:{vm_id}")

    def qemu_of_disk(self, disk_id: str) -> VmQemu | None:
        """The running qemu this disk is plugged into, if any (then only qemu may touch its volumes)."""
        for vm_qemu in list(self.vm_qemus.values()):  # other threads start and stop VMs
            if vm_qemu.running and vm_qemu.has_disk(disk_id):
                return vm_qemu
        return None

    def vm_of_disk(self, disk_id: str) -> dict | None:
        # An index of the last scan, checked against the VM it names: listing 12,000 disks must
        # not scan 5,000 VMs for each (the `large` seed). A miss or a stale entry scans again.
        vm = self.store["vms"].get(getattr(self, "_disk_vms", {}).get(disk_id, ""))
        if vm is not None and any(a["disk_id"] == disk_id for a in vm["disk_attachments"]):
            disk = self.store["disks"].get(disk_id)
            if disk is None or not disk.get("shareable"):  # a shared disk's first VM is the scan's
                return vm
        index: dict[str, str] = {}
        for vm in self.store["vms"].values():
            for a in vm["disk_attachments"]:
                index.setdefault(a["disk_id"], vm["id"])
        self._disk_vms = index
        return self.store["vms"].get(index.get(disk_id, ""))
