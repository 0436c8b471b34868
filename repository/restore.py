"""Restore a backup point: recreate the VM from its saved OVF and upload every disk back.

Strategy-independent: it needs only the repository files. Each disk's chain is read through
qemu by the imageio client (nothing is merged on disk first). A restore never replaces an
existing VM: the name must be free.
"""

from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client

from inventory.engine import connect
from jobs.models import Job
from jobs.runner import JobCancelled, JobError, enqueue, handler
from repository.models import BackupPoint
from repository.storage import RepositoryError
from strategies.engine import Cleanup, Progress, fault_text, image_transfer, wait_for


def request_restore(
    *, point: BackupPoint, name: str, cluster: str = "", storage_domain: str = "", power_on: bool = False, owner=None
) -> Job:
    if point.status != BackupPoint.Status.COMPLETE:
        raise ValueError(f"Backup {point.pk} is {point.status}; only a complete backup can be restored.")
    if not name.strip():
        raise ValueError("Name the restored VM.")
    job = Job.objects.create(
        kind=Job.Kind.RESTORE,
        vm=point.vm,
        manager=point.vm.manager,
        owner=owner,
        name=f"{point.vm.name} -> {name}",
        params={
            "point": point.pk,
            "name": name.strip(),
            "cluster": cluster,
            "storage_domain": storage_domain,
            "power_on": power_on,
        },
    )
    return enqueue(job)


@handler(Job.Kind.RESTORE)
def run_restore(*, job: Job) -> dict:
    params = job.params
    try:
        point = BackupPoint.objects.select_related("vm__manager", "destination").get(pk=params["point"])
    except BackupPoint.DoesNotExist:
        raise JobError("The backup point to restore no longer exists.") from None
    pdir = point.directory
    try:
        manifest = pdir.read_manifest()
    except RepositoryError as e:
        raise JobError(str(e)) from None
    for entry in manifest["disks"]:
        if not (pdir.path / entry["file"]).exists():
            raise JobError(f"The backup is damaged: {pdir.path / entry['file']} is missing.")
    ovf = (pdir.path / manifest["ovf"]).read_text()
    name = params["name"]
    with connect(point.vm.manager) as conn, Cleanup(job) as cleanup:
        system = conn.system_service()
        if system.vms_service().list(search=f"name={name}"):
            raise JobError(f"A VM named {name} exists on the engine; restores never replace a VM. Choose another name.")
        cluster = _cluster(system, params.get("cluster"), ovf)
        total = sum(d["virtual_size"] for d in manifest["disks"])
        job.set_progress(0, total)
        done, new_ids = 0, {}
        for entry in manifest["disks"]:
            job.check_cancel()
            domain = _storage_domain(system, params.get("storage_domain"), entry, cluster)
            disk = _create_disk(system, entry, domain, job)
            cleanup.add(f"remove restored disk {disk.alias}", lambda d=disk.id: _remove_disk(system, d))
            new_ids[entry["disk_id"]] = disk.id
            _upload(conn, pdir.path / entry["file"], disk, job, base=done, total=total)
            done += entry["virtual_size"]
        for old, new in new_ids.items():
            ovf = ovf.replace(old, new)
        try:
            vm = system.vms_service().add(
                types.Vm(
                    name=name,
                    cluster=types.Cluster(id=cluster.id),
                    initialization=types.Initialization(
                        configuration=types.Configuration(type=types.ConfigurationType.OVF, data=ovf)
                    ),
                ),
                clone=True,
            )
        except sdk.Error as e:
            raise JobError(f"The engine refused to create the VM from the saved OVF: {fault_text(e)}") from None
        cleanup.add(f"remove VM {name}", lambda: system.vms_service().vm_service(vm.id).remove())
        attached = {a.disk.id for a in system.vms_service().vm_service(vm.id).disk_attachments_service().list()}
        for new in new_ids.values():
            if new not in attached:
                system.vms_service().vm_service(vm.id).disk_attachments_service().add(
                    types.DiskAttachment(
                        disk=types.Disk(id=new), interface=types.DiskInterface.VIRTIO_SCSI, active=True
                    )
                )
        if params.get("power_on"):
            system.vms_service().vm_service(vm.id).start()
            job.log("info", f"Started VM {name}")
        cleanup.commit()
    job.set_progress(total, total)
    job.log("info", f"Restored backup {point.pk} as VM {name} ({vm.id})")
    return {"vm_id": vm.id, "vm_name": name, "disks": new_ids}


def _cluster(system, wanted: str, ovf: str):
    clusters = system.clusters_service().list()
    if wanted:
        found = [c for c in clusters if c.name == wanted or c.id == wanted]
        if not found:
            raise JobError(f"No cluster {wanted!r} on the engine (clusters: {', '.join(c.name for c in clusters)}).")
        return found[0]
    import re

    match = re.search(r"<ClusterName>([^<]*)</ClusterName>", ovf)
    found = [c for c in clusters if match and c.name == match.group(1)]
    if found:
        return found[0]
    raise JobError("The VM's original cluster no longer exists; choose a cluster for the restore.")


def _storage_domain(system, wanted: str, entry: dict, cluster):
    domains = [d for d in system.storage_domains_service().list() if d.type == types.StorageDomainType.DATA]
    if wanted:
        found = [d for d in domains if d.name == wanted or d.id == wanted]
        if not found:
            raise JobError(f"No data storage domain {wanted!r} on the engine.")
        return found[0]
    original = [d for d in domains if d.id == entry.get("storage_domain_id")]
    if original:
        return original[0]
    if not domains:
        raise JobError("The engine has no data storage domain to restore into.")
    return domains[0]


def _create_disk(system, entry: dict, domain, job):
    fmt, sparse = entry.get("disk_format", "cow"), entry.get("sparse", True)
    block = domain.storage is not None and domain.storage.type in (types.StorageType.ISCSI, types.StorageType.FCP)
    if block and fmt == "raw" and sparse:
        sparse = False
        job.log(
            "warning",
            f"Disk {entry['alias']}: RAW disks on block storage domain {domain.name} cannot be thin; "
            "restoring it preallocated.",
        )
    disks = system.disks_service()
    try:
        disk = disks.add(
            types.Disk(
                name=entry["alias"],
                provisioned_size=entry["virtual_size"],
                format=types.DiskFormat(fmt),
                sparse=sparse,
                storage_domains=[types.StorageDomain(id=domain.id)],
                backup=types.DiskBackup.INCREMENTAL if entry.get("backup_enabled") and fmt == "cow" else None,
            )
        )
    except sdk.Error as e:
        raise JobError(f"The engine refused to create disk {entry['alias']}: {fault_text(e)}") from None
    service = disks.disk_service(disk.id)

    def ready():
        status = service.get().status
        if status == types.DiskStatus.ILLEGAL:
            raise JobError(f"The engine could not create disk {entry['alias']}.")
        return status == types.DiskStatus.OK

    wait_for(ready, what=f"disk {entry['alias']} to be created", job=job)
    return service.get()


def _remove_disk(system, disk_id: str) -> None:
    try:
        system.disks_service().disk_service(disk_id).remove()
    except sdk.NotFoundError:
        pass


def _upload(conn, path: Path, disk, job, *, base: int, total: int) -> None:
    with (
        image_transfer(conn, disk_id=disk.id, direction="upload", fmt="raw", job=job) as handle,
        Progress(job, base=base, total=total, on_cancel=handle.service.cancel) as progress,
    ):
        transfer = handle.transfer
        try:
            client.upload(
                str(path),
                transfer.transfer_url,
                conn.ca_file,
                secure=conn.verify_tls,
                progress=progress,
                proxy_url=transfer.proxy_url,
            )
        except Exception as e:
            if progress.cancelled:
                raise JobCancelled() from None
            raise JobError(f"Uploading disk {disk.alias} failed: {fault_text(e)}") from None
