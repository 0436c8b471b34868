"""Disk attachment: each disk snapshot of the VM is attached to a proxy VM of its cluster, in which
this node runs; the node reads it there as a local block device into a sparse RAW file, and detaches
it. Needs neither imageio nor SSH to the hosts, and works on every engine since 4.0. Full only.

The backup runs on the node of a proxy of the VM's cluster (`placement`). Before anything is made, the
proxy's stale attachments of ours (a crashed run's: disks of inventory VMs other than the proxy) are
detached, since their snapshots could not be removed while attached. Each attachment is recorded on
the job as made ("disk_attachment"), so the reaper detaches what a dead job left, before it removes
the snapshot; the cleanup stack detaches in the same order (newest first)."""

from concurrent.futures import Future
from pathlib import Path

import blake3
import ovirtsdk4.types as types
from django.conf import settings

from core.cleanup import Cleanup
from inventory.models import VM, Disk, ProxyVM
from inventory.proxies import proxies_in, proxy_placement, proxy_slot
from jobs.errors import JobError
from jobs.models import Job
from jobs.placement import Placement
from ovirt.attachments import DISK_ATTACHMENT, attach_disk_snapshot, attached_disk_ids, detach_disk_snapshot
from repository.models import BackupPoint
from repository.writer import PointWriter
from strategies.base import Strategy, Window
from strategies.disk_attachment.devices import DeviceMissing, wait_for_device
from strategies.disk_attachment.reader import copy_sparse

MiB = 1024**2


def proxies_of(vm: VM):
    """The enabled proxy VMs of the VM's cluster, the VM itself left out."""
    return proxies_in(vm.cluster_id).exclude(vm=vm)


class DiskAttachmentStrategy(Strategy):
    name = "disk_attachment"
    label = "Disk attachment (proxy VM)"
    min_api_version = (4, 0)
    # A snapshot made and removed; its disks attached to the proxy and detached (AttachDiskToVm and
    # DetachDiskFromVm check configure_vm_storage on the proxy VM).
    permits = ("manipulate_vm_snapshots", "configure_vm_storage")

    @classmethod
    def vm_blocker(cls, vm: VM, disks: list[Disk]) -> str:
        if vm.cluster_id is None:
            return "the VM has no cluster, so no proxy VM of its cluster can read its disks"
        if hasattr(vm, "proxy"):
            return "the VM is a proxy VM: its disks cannot be attached to itself"
        if not proxies_of(vm).exists():
            return f"no proxy VM in cluster {vm.cluster.name}: mark one (Inventory > Proxy VMs, or manage.py proxy add)"
        return ""

    @classmethod
    def placement(cls, job) -> Placement:
        """On the node inside a proxy VM of the VM's cluster: the first whose node is online, else
        the first (the job waits for it, saying so)."""
        if job.vm is None or job.vm.cluster is None:
            return super().placement(job)
        return proxy_placement(list(proxies_of(job.vm)), job.vm.cluster.name)

    @classmethod
    def slots(cls, job) -> list[dict]:
        """A backup holds one of its proxy's attachment places while it runs: it attaches one disk at a
        time, and a proxy takes at most `max_attached` disks at once."""
        placement = cls.placement(job)
        proxy = ProxyVM.objects.filter(node_id=placement.node, vm__cluster_id=job.vm.cluster_id).first()
        return [proxy_slot(proxy)] if proxy is not None else []

    @property
    def proxy(self) -> ProxyVM:
        """The proxy VM this node runs in, of the VM's cluster."""
        if not hasattr(self, "_proxy"):
            found = proxies_of(self.request.vm).filter(node_id=settings.NODE_NAME).first()
            if found is None:
                raise JobError(
                    f"This node ({settings.NODE_NAME}) runs in no proxy VM of cluster "
                    f"{self.request.vm.cluster.name}: the backup must run on a proxy's node."
                )
            self._proxy = found
        return self._proxy

    def clean_leftovers(self) -> None:
        """The proxy's attachments of ours that a crashed run left go first: the snapshots they hold
        cannot be removed while attached. Ours are disks of inventory VMs other than the proxy (no
        administrator attaches another VM's disk to a backup proxy), but for those a running backup
        through the same proxy recorded: several VMs are backed up at once on one proxy."""
        proxy = self.proxy
        device_dir = Path(proxy.device_dir)
        if not device_dir.is_dir():
            raise JobError(
                f"The proxy VM {proxy.vm.name}'s device directory {device_dir} is missing on node "
                f"{settings.NODE_NAME}: fix the proxy's device directory (Inventory > Proxy VMs)."
            )
        proxy_id = str(proxy.vm.engine_id)
        others = set(
            Disk.objects.filter(manager_id=proxy.vm.manager_id).exclude(vm=proxy.vm).values_list("engine_id", flat=True)
        )
        in_use = {
            record["id"]
            for result in Job.objects.running().exclude(pk=self.job.pk).values_list("result", flat=True)
            for record in (result or {}).get("engine_objects", [])
            if record.get("kind") == DISK_ATTACHMENT and record.get("proxy") == proxy_id
        }
        left = attached_disk_ids(self.connection, proxy_id) & {str(d) for d in others}
        for disk_id in sorted(left - in_use):
            self.job.log("warning", f"Detaching disk {disk_id} from proxy VM {proxy.vm.name}, left by an earlier run")
            detach_disk_snapshot(self.connection, proxy_id, disk_id, job=self.job)
        super().clean_leftovers()

    def open_window(self, cleanup: Cleanup, *, disks: list[types.Disk], parent: BackupPoint | None) -> Window:
        return self.open_snapshot_window(cleanup)

    def move_disk(
        self, disk: types.Disk, window: Window, writer: PointWriter, *, cleanup: Cleanup, base: int, total: int
    ) -> int:
        proxy, job = self.proxy, self.job
        proxy_id = str(proxy.vm.engine_id)
        attach_disk_snapshot(
            self.connection, proxy_id, disk_id=disk.id, snapshot_id=window.base_id, interface=proxy.interface
        )
        job.remember_engine_object(DISK_ATTACHMENT, disk.id, proxy=proxy_id, name=disk.alias)

        def detach() -> None:
            detach_disk_snapshot(self.connection, proxy_id, disk.id, job=job)
            job.forget_engine_object(disk.id)

        undo = cleanup.add(f"detach disk {disk.alias} from proxy VM {proxy.vm.name}", detach)
        try:
            device = wait_for_device(
                Path(proxy.device_dir),
                disk.id,
                proxy.interface,
                timeout=settings.PROXY_DEVICE_TIMEOUT,
                check=job.check_cancel,
            )
        except DeviceMissing as e:
            raise JobError(str(e)) from None
        name = f"{disk.id}.raw"
        part = writer.part(name)
        hashed = blake3.blake3(max_threads=blake3.blake3.AUTO)
        read, written = copy_sparse(
            device, part, progress=lambda done: job.set_progress(base + done), check=job.check_cancel, digest=hashed
        )
        if read != disk.provisioned_size:
            raise JobError(
                f"Disk {disk.alias}'s device on the proxy holds {read} bytes, not the disk's {disk.provisioned_size}."
            )
        digest = Future()
        digest.set_result(f"blake3:{hashed.hexdigest()}")  # as the writer's own pass would give it
        cleanup.discard(undo)
        detach()  # before the next disk is attached: the proxy holds one disk of this backup at a time
        final = self.commit_disk(writer, disk, name, fmt="raw", digest=digest)
        job.log(
            "info",
            f"Disk {disk.alias}: read through proxy VM {proxy.vm.name} ({device}), "
            f"{final.stat().st_blocks * 512 // MiB} MiB stored ({written // MiB} MiB of data)",
        )
        return read
