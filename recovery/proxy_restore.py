"""Writing restored disks through a proxy VM: the disk attachment path backwards, for sites that reach
neither imageio nor the hosts over SSH.

As in every restore, each new disk is made empty through the API (the engine makes its volume). Then
it is attached, writable, to a proxy VM of the cluster the VM is restored into, in which this node
runs; the node finds its block device by the disk's serial, as a backup through the proxy does, writes
the point's chain onto it with `qemu-img convert -n` and detaches it. The VM is then recreated from
its OVF with the disks, as on the other paths. Each attachment is recorded on the job as it is made
("disk_attachment"), so the reaper detaches what a dead worker left before it removes the disk.

A new volume on file storage reads as zeros, so zero areas are skipped there; a new LV on block
storage may still hold an older volume's data, so zeros are written there.
"""

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from core.cleanup import Cleanup
from core.errors import Cancelled
from core.qemu_img import ConvertError, convert
from inventory.models import Cluster, ProxyVM
from inventory.proxies import proxies_in, proxy_placement, proxy_slot
from jobs.errors import JobError
from jobs.models import Job, Node
from jobs.placement import Placement
from ovirt.attachments import DISK_ATTACHMENT, attach_disk_writable, detach_disk_snapshot
from repository.models import BackupPoint
from strategies.disk_attachment.devices import DeviceMissing, wait_for_device

PROXY = "proxy"


def target_cluster(point: BackupPoint, cluster: str = "") -> Cluster | None:
    """The cluster a restore of the point writes into, as the inventory knows it: the one asked for (by
    name or id), else the backed-up VM's."""
    if not cluster:
        return point.vm.cluster
    clusters = Cluster.objects.filter(manager_id=point.vm.manager_id, missing_since=None)
    found = clusters.filter(name=cluster).first()
    if found is None:
        with contextlib.suppress(ValueError):
            found = clusters.filter(engine_id=uuid.UUID(cluster)).first()
    return found


def restore_proxies(point: BackupPoint, cluster: str = "") -> list[ProxyVM]:
    """The proxy VMs a restore of the point into `cluster` (default: the VM's) can write through."""
    found = target_cluster(point, cluster)
    return list(proxies_in(found)) if found is not None else []


def usable_proxy(point: BackupPoint, cluster: str = "") -> ProxyVM | None:
    """A proxy of the target cluster whose node is online now, if any."""
    proxies = restore_proxies(point, cluster)
    alive = set(Node.objects.alive().filter(name__in=[p.node_id for p in proxies]).values_list("name", flat=True))
    return next((p for p in proxies if p.node_id in alive), None)


def _cluster_name(job: Job) -> str:
    point = BackupPoint.objects.select_related("vm__cluster").filter(pk=job.params.get("point")).first()
    found = target_cluster(point, job.params.get("cluster") or "") if point is not None else None
    return found.name if found is not None else job.params.get("cluster") or "(unknown)"


def proxy_restore_placement(job: Job) -> Placement:
    """A restore through the proxy runs on the node inside a proxy VM of the cluster it restores into:
    the first whose node is online, else the first (the job waits for it, saying so)."""
    point = BackupPoint.objects.select_related("vm__cluster").filter(pk=job.params.get("point")).first()
    proxies = restore_proxies(point, job.params.get("cluster") or "") if point is not None else []
    return proxy_placement(proxies, _cluster_name(job))


def proxy_restore_slots(job: Job) -> list[dict]:
    """One of the proxy's attachment places while the restore runs (it attaches one disk at a time)."""
    node = proxy_restore_placement(job).node
    point = BackupPoint.objects.select_related("vm__cluster").filter(pk=job.params.get("point")).first()
    if point is None:
        return []
    proxy = next((p for p in restore_proxies(point, job.params.get("cluster") or "") if p.node_id == node), None)
    return [proxy_slot(proxy)] if proxy is not None else []


class ProxyDiskWriter:
    """Writes restored disks through the proxy VM this node runs in, one attached at a time."""

    def __init__(self, connection, point: BackupPoint, *, job: Job, cleanup: Cleanup):
        self.connection = connection
        self.job = job
        self.cleanup = cleanup
        cluster = target_cluster(point, job.params.get("cluster") or "")
        proxies = restore_proxies(point, job.params.get("cluster") or "")
        where = cluster.name if cluster is not None else job.params.get("cluster")
        if not proxies:
            raise JobError(
                f"No proxy VM is marked in cluster {where} to restore through: mark one (Inventory > Proxy VMs, "
                "or manage.py proxy add), or restore through imageio or SSH."
            )
        self.proxy = next((p for p in proxies if p.node_id == settings.NODE_NAME), None)
        if self.proxy is None:
            raise JobError(
                f"This node ({settings.NODE_NAME}) runs in no proxy VM of cluster {where} "
                f"({', '.join(p.vm.name for p in proxies)}): a restore through the proxy must run on a proxy's node."
            )
        self.device_dir = Path(self.proxy.device_dir)
        if not self.device_dir.is_dir():
            raise JobError(
                f"The proxy VM {self.proxy.vm.name}'s device directory {self.device_dir} is missing on node "
                f"{settings.NODE_NAME}: fix the proxy's device directory (Inventory > Proxy VMs)."
            )
        job.log("info", f"Writing the restored disks through proxy VM {self.proxy.vm.name} (node {settings.NODE_NAME})")

    def write(self, source: Path, disk, *, fmt: str, block: bool, base: int, total: int) -> None:
        """The point's image `source` (format `fmt`, with its chain) onto the new disk, attached to the
        proxy for the time of the write. `block`: the disk is on block storage (its LV is not zeroed)."""
        proxy, job = self.proxy, self.job
        proxy_id = str(proxy.vm.engine_id)
        attach_disk_writable(self.connection, proxy_id, disk_id=disk.id, interface=proxy.interface)
        job.remember_engine_object(DISK_ATTACHMENT, disk.id, proxy=proxy_id, name=disk.alias)

        def detach() -> None:
            detach_disk_snapshot(self.connection, proxy_id, disk.id, job=job)
            job.forget_engine_object(disk.id, kind=DISK_ATTACHMENT)  # the disk's own record stays

        undo = self.cleanup.add(f"detach disk {disk.alias} from proxy VM {proxy.vm.name}", detach)
        try:
            device = wait_for_device(
                self.device_dir, disk.id, proxy.interface, timeout=settings.PROXY_DEVICE_TIMEOUT, check=job.check_cancel
            )
        except DeviceMissing as e:
            raise JobError(str(e)) from None

        def progress(n: int) -> None:
            job.set_progress(base + min(n, disk.provisioned_size), total)

        convert_onto_device(
            source,
            fmt,
            device,
            zeroed=not block,
            size=disk.provisioned_size,
            progress=progress,
            cancelled=job.cancel_is_requested,
        )
        self.cleanup.discard(undo)
        detach()  # the VM gets the disk next; the proxy holds one disk of this restore at a time
        job.log("info", f"Disk {disk.alias} written through proxy VM {proxy.vm.name} ({device})")


def convert_onto_device(
    source: Path,
    fmt: str,
    device: Path,
    *,
    zeroed: bool,
    size: int,
    progress: Callable[[int], None],
    cancelled: Callable[[], bool],
) -> None:
    """Write the guest-visible content of the image `source` (its format given, never probed: a RAW
    guest disk may begin with any header) onto the block device, then flush the device. With `zeroed`
    the device reads as zeros already and zero areas are skipped; otherwise zeros are written there."""

    def check() -> None:
        if cancelled():
            raise Cancelled()

    try:
        convert(
            source,
            fmt,
            device,
            "raw",
            options=["-n", *(["--target-is-zero"] if zeroed else [])],
            progress=lambda n: progress(min(n, size)),
            check=check,
        )
    except ConvertError as e:
        raise JobError(f"Writing {source.name} onto {device} on the proxy failed: {e}") from None
    # What the page cache still holds goes down to the disk before it is detached.
    fd = os.open(device, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
