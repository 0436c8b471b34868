"""Restore a backup point: recreate the VM from its saved OVF and upload its disks back, or
restore chosen disks alone (floating, or attached to an existing VM).

Strategy-independent: it needs only the repository files. Each disk's chain is read through
qemu by the imageio client (nothing is merged on disk first), or written over SSH straight into
the new volume on a host (recovery.ssh_restore; points of the SSH transfer by default). A restore replaces an existing
VM only when asked (`replace`), and then only after every disk was uploaded, so a failed
restore leaves the existing VM as it was.
"""

import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client

from core.cleanup import Cleanup
from core.errors import Cancelled, OperatorError
from core.formats import plural
from inventory.slots import vm_slots
from jobs.errors import JobError
from jobs.models import Job
from jobs.placement import Placement, in_cluster
from jobs.runner import enqueue
from ovirt.connection import connect
from ovirt.disks import add_disk, remove_disk
from ovirt.errors import EngineError, fault_text
from ovirt.leftovers import UndoContext, register_undo
from ovirt.transfers import tracked_transfer
from ovirt.vms import attach_disk, find_vm, remove_vm, vm_name_problem, vm_service
from recovery.export_restore import export_restore_placement, write_into_export_domain
from recovery.proxy_restore import PROXY, ProxyDiskWriter, proxy_restore_placement, proxy_restore_slots
from recovery.ssh_restore import TRANSFERS, SshDiskWriter, restore_transfer
from repository.claims import PointBusy, claim_chain
from repository.manifest import ManifestDisk
from repository.models import BackupPoint
from repository.ovf import without_disks
from repository.places import point_placement
from repository.storage import RepositoryError, open_stored
from repository.verify import awaited_problem, chain_files, files_problem, manifest_problems, read_ovf

# The kind of job this app registers (jobs.kinds).
RESTORE = "restore"
ALLOCATIONS = ("original", "thin", "preallocated")
# The record of a VM a restore renamed aside to replace it (Job.remember_engine_object): after a dead
# worker the reaper gives it its name back (registered below).
RENAMED_VM = "renamed_vm"


def _give_name_back(context: UndoContext, obj: dict) -> str:
    """A VM a dead restore renamed aside gets its name back, unless another VM took that name since."""
    vm_id, name = obj["id"], obj["name"]
    named = context.connection.system_service().vms_service().list(search=f"name={name}")
    if any(v.name == name and v.id != vm_id for v in named):
        raise OperatorError(f"VM {vm_id} keeps its temporary name: another VM is named {name} now")
    vm_service(context.connection, vm_id).update(types.Vm(name=name))
    return f"Gave VM {vm_id} its name {name} back"


register_undo(
    RENAMED_VM, _give_name_back, describe=lambda obj: f"VM {obj['id']} renamed aside from {obj.get('name', '')}"
)


def vm_named(manager, name: str) -> types.Vm | None:
    """The engine's VM of exactly this name now, or None: asked before a restore is queued, so a
    name already taken is refused on the form rather than by the job. Raises EngineError (in words)
    when the engine cannot be asked."""
    try:
        with connect(manager) as conn:
            return find_vm(conn, name)
    except sdk.Error as e:
        raise EngineError(f"The engine {manager.name} did not answer: {fault_text(e)}") from None


class NameTaken(ValueError):
    """The name asked for a new VM is taken on the engine, by a VM that may not be replaced."""


def check_new_vm_name(manager, name: str, *, replace: bool = False, how_to_replace: str = "") -> types.Vm | None:
    """A new VM's name against the engine, now, before anything is queued: the one check of the
    restore wizard, the restore API and instant restore's form and API (a job that found the name
    taken would fail only after its work began).

    Returns None when no VM has the name, or the VM Replace would remove (`replace` asked, and it is
    down). Raises NameTaken in words when the name is taken otherwise, and EngineError when the engine
    cannot be asked. `how_to_replace` says how this caller asks for Replace ("tick Replace"); empty
    where a VM is never replaced (instant restore, an import)."""
    try:
        found = vm_named(manager, name)
    except (OperatorError, OSError) as e:
        said = str(e).rstrip(".")
        raise EngineError(
            f"Could not check on the engine whether a VM is named {name}: {said}. Nothing was queued."
        ) from None
    if found is None:
        return None
    state = found.status.value if found.status is not None else "unknown"
    if not (replace and how_to_replace):
        hint = f", or {how_to_replace} to have the restored VM take its place" if how_to_replace else ""
        raise NameTaken(f"A VM named {name} already exists on the engine ({state}). Choose another name{hint}.")
    if state != "down":
        raise NameTaken(
            f"The VM {name} that Replace would remove is {state}: shut it down first, or choose another name."
        )
    return found


def new_vm_name(
    *, name: str = "", attach_to: str = "", floating: bool = False, export_domain: bool = False, import_vm: bool = False
) -> str:
    """The name of the VM a restore asked so makes on the engine; "" when it makes none (disks only,
    or a VM left in an export domain for an administrator to import)."""
    if attach_to or floating or (export_domain and not import_vm):
        return ""
    return name.strip()


def request_restore(
    *,
    point: BackupPoint,
    origin: str,
    name: str = "",
    cluster: str = "",
    storage_domain: str = "",
    power_on: bool = False,
    owner=None,
    disks: list[str] | None = None,
    attach_to: str = "",
    floating: bool = False,
    allocation: str = "original",
    replace: bool = False,
    transfer: str = "auto",
    export_domain: bool = False,
    data_center: str = "",
    import_vm: bool = False,
) -> Job:
    """Queue a restore. Whole VM by default; with `attach_to` or `floating`, the disks only.
    `transfer`: how the disks are written, "imageio", "ssh" or "auto" (see restore_transfer). With
    `export_domain`, the point is written into the export domain of its VM's data center (or of
    `data_center`) on this node's staging share instead, and imported from there as VM `name` only
    with `import_vm`."""
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {', '.join(TRANSFERS)}.")
    if point.status != BackupPoint.Status.COMPLETE:
        raise ValueError(f"Backup {point.pk} is {point.status}; only a complete backup can be restored.")
    disks_only = bool(attach_to or floating)
    if export_domain and disks_only:
        raise ValueError("An export domain takes whole VMs: restore into it without attach_to or floating.")
    if import_vm and not export_domain:
        raise ValueError("Import is the last step of a restore into an export domain: ask for export_domain too.")
    if import_vm and not storage_domain:
        raise ValueError("Name the data storage domain the imported VM's disks go to (storage_domain).")
    if not disks_only and not name.strip() and not (export_domain and not import_vm):
        raise ValueError("Name the restored VM.")
    made = new_vm_name(
        name=name, attach_to=attach_to, floating=floating, export_domain=export_domain, import_vm=import_vm
    )
    problem = vm_name_problem(made)
    if problem:
        raise ValueError(problem)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}.")
    if attach_to and floating:
        raise ValueError("Restore disks either floating or attached to a VM, not both.")
    known = {str(d) for d in point.disks.values_list("disk__engine_id", flat=True)} | set(
        point.disks.values_list("disk__name", flat=True)
    )
    unknown = [d for d in disks or [] if d not in known]
    if unknown:
        raise ValueError(f"Backup {point.pk} has no disk {unknown[0]!r}.")
    if not export_domain:
        transfer, _ = restore_transfer(point, transfer, cluster=cluster)
    if disks_only:
        # The job's title says what goes where: "web01 -> 1 disk, attached to VM web01-api".
        which = plural(len(disks), "disk") if disks else "every disk"
        target = f"{which}, {f'attached to VM {attach_to}' if attach_to else 'floating'}"
    else:
        target = name.strip()
    if export_domain:
        target = f"the export domain{f' of {data_center}' if data_center else ''}" + (
            f", imported as {name.strip()}" if import_vm else ""
        )
    job = Job.objects.create(
        kind=RESTORE,
        vm=point.vm,
        manager=point.vm.manager,
        owner=owner,
        origin=origin,
        name=f"{point.vm.name} -> {target}",
        params={
            "point": point.pk,
            "name": name.strip(),
            "cluster": cluster,
            "storage_domain": storage_domain,
            "power_on": power_on,
            "disks": disks or [],
            "attach_to": attach_to,
            "floating": floating,
            "allocation": allocation,
            "replace": replace,
            "transfer": transfer,
            "export_domain": export_domain,
            "data_center": data_center,
            "import": import_vm,
        },
    )
    return enqueue(job)


def run_restore(*, job: Job) -> dict:
    params = job.params
    try:
        point = BackupPoint.objects.select_related("vm__manager", "destination").get(pk=params["point"])
    except BackupPoint.DoesNotExist:
        raise JobError("The backup point to restore no longer exists.") from None
    # Its chain is claimed for reading until the restore ends: no deletion or merge takes a file from
    # under it (they are refused, in words), and one under way now is waited for.
    with ExitStack() as claim:
        try:
            claim.enter_context(claim_chain(point, job=job, wait=True))
        except PointBusy as e:
            raise JobError(f"{e.what}: nothing was restored.") from None
        return restore_point(job=job, point=point)


def restore_point(*, job: Job, point: BackupPoint) -> dict:
    """The restore itself, with the point's chain claimed by run_restore."""
    params = job.params
    pdir = point.directory
    # Before anything is made on the engine: the manifest is the one the database recorded (each
    # disk's file and checksum, the OVF's), every file each disk is read from (the point's and its
    # chain's, as the manifests link them) matches its checksum, and the OVF matches its own and is
    # safe to hand to the engine (which would otherwise be the first to parse it, after the uploads).
    try:
        manifest = point.manifest()
    except RepositoryError as e:
        _refuse_damaged(str(e))
    for problem in manifest_problems(point, manifest):
        _refuse_damaged(problem)
    wanted = set(params.get("disks") or [])
    entries = [e for e in manifest.disks if not wanted or e.disk_id in wanted or e.alias in wanted]
    # The chain each disk is read from is whole (the point's files and its parents', as the manifests
    # link them and the database records them). Their checksums are computed while the data moves, as
    # a backup hashes while it writes, instead of in a whole read of their own first.
    chains = {entry.disk_id: _whole_chain(point, entry.disk_id) for entry in entries}
    try:
        ovf = read_ovf(point, manifest, warn=lambda warning: job.log("warning", warning))
    except RepositoryError as e:
        _refuse_damaged(str(e))
    disks_only = bool(params.get("attach_to") or params.get("floating"))
    name = params["name"]
    if params.get("export_domain"):
        with connect(point.vm.manager) as conn, Cleanup(job, describe=fault_text) as cleanup:
            checksums = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-checksums")
            cleanup.add("stop checking the stored files", lambda: checksums.shutdown(wait=False, cancel_futures=True))
            return write_into_export_domain(
                job=job,
                conn=conn,
                point=point,
                entries=entries,
                ovf=ovf,
                stored_problem=lambda entry: checksums.submit(files_problem, chains[entry.disk_id]),
                cleanup=cleanup,
            )
    with connect(point.vm.manager) as conn, Cleanup(job, describe=fault_text) as cleanup:
        system = conn.system_service()
        vms = system.vms_service()
        found = find_vm(conn, name) if not disks_only else None
        existing = [found] if found else []
        if existing and not params.get("replace"):
            raise JobError(
                f"A VM named {name} exists on the engine; a restore replaces a VM only when asked "
                "(replace). Choose another name."
            )
        if existing and existing[0].status != types.VmStatus.DOWN:
            raise JobError(f"VM {name} is {existing[0].status.value}; shut it down before replacing it.")
        target_vm = _target_vm(conn, params["attach_to"]) if params.get("attach_to") else None
        cluster = _cluster(system, params.get("cluster"), ovf) if not disks_only else None
        total = sum(e.virtual_size for e in entries)
        job.set_progress(0, total)
        done, new_ids = 0, {}
        data_domains = [d for d in system.storage_domains_service().list() if d.type == types.StorageDomainType.DATA]
        over_ssh = SshDiskWriter(conn, point, job=job, cleanup=cleanup) if params.get("transfer") == "ssh" else None
        through_proxy = (
            ProxyDiskWriter(conn, point, job=job, cleanup=cleanup) if params.get("transfer") == PROXY else None
        )
        checksums = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-checksums")
        cleanup.add("stop checking the stored files", lambda: checksums.shutdown(wait=False, cancel_futures=True))
        for entry in entries:
            job.check_cancel()
            domain = _storage_domain(data_domains, params.get("storage_domain"), entry)
            disk = add_disk(conn, _disk_spec(entry, domain, job, params.get("allocation", "original")), job=job)
            cleanup.add(
                f"remove restored disk {disk.alias}",
                lambda d=disk.id, n=disk.alias: remove_disk(conn, d, name=n, job=job),
            )
            new_ids[entry.disk_id] = disk.id
            stored = checksums.submit(files_problem, chains[entry.disk_id])
            if over_ssh is not None or through_proxy is not None:
                try:
                    if over_ssh is not None:
                        over_ssh.write(pdir.path / entry.file, disk, base=done, total=total)
                    else:
                        through_proxy.write(
                            pdir.path / entry.file,
                            disk,
                            fmt=entry.format,
                            block=on_block_storage(domain),
                            base=done,
                            total=total,
                        )
                except Cancelled:
                    raise
                except Exception:
                    _refuse_mismatch(stored, disk, job)  # stored files that differ are the cause to tell
                    raise
                _refuse_mismatch(stored, disk, job)
            else:
                _upload(
                    conn,
                    pdir.path / entry.file,
                    disk,
                    job,
                    base=done,
                    total=total,
                    before_finalize=lambda s=stored, d=disk: _refuse_mismatch(s, d, job),
                )
            done += entry.virtual_size
        checksums.shutdown()
        if over_ssh is not None:
            over_ssh.close()  # the LVs it activated are deactivated before the VM can start
        if disks_only:
            for entry in entries:
                if target_vm is not None:
                    attach_disk(conn, target_vm.id, new_ids[entry.disk_id], bootable=False)
            cleanup.commit()
            job.forget_engine_objects()
            where = f"attached to VM {target_vm.name}" if target_vm is not None else "floating"
            made = ", ".join(f"{e.alias} ({new_ids[e.disk_id]})" for e in entries)
            job.log("info", f"Restored {plural(len(entries), 'disk')} of backup {point.pk}, {where}: {made}")
            return {
                "disks": new_ids,
                # Each new disk's alias beside its id: what the job page and an admin find it by.
                "disk_names": {new_ids[e.disk_id]: e.alias for e in entries},
                "attached_to": target_vm.name if target_vm is not None else "",
                "attached_to_id": target_vm.id if target_vm is not None else None,
            }
        replaced = existing[0] if existing else None
        if replaced is not None:
            # Every disk is uploaded. The old VM steps aside under another name and is removed only
            # once the new one exists; if anything fails it gets its name back.
            aside = f"{name}-replaced-by-job-{job.pk}"
            # Recorded first: a worker that dies during the rename still leaves the way back (giving
            # a VM the name it has is harmless).
            job.remember_engine_object(RENAMED_VM, replaced.id, name=name)
            vms.vm_service(replaced.id).update(types.Vm(name=aside))

            def give_name_back() -> None:
                vms.vm_service(replaced.id).update(types.Vm(name=name))
                job.forget_engine_object(replaced.id)

            cleanup.add(f"give VM {name} its name back", give_name_back)
        vm = create_vm_from_ovf(
            conn, name=name, cluster_id=cluster.id, ovf=ovf, disk_ids=new_ids, job=job, cleanup=cleanup
        )
        cleanup.commit()
        job.forget_engine_objects()
        if replaced is not None:
            remove_vm(conn, replaced.id, name=name, job=job)
            job.log("warning", f"Removed the VM {name} ({replaced.id}) this restore replaced, as asked")
        if params.get("power_on"):
            vms.vm_service(vm.id).start()
            job.log("info", f"Started VM {name}")
    job.set_progress(total, total)
    job.log("info", f"Restored backup {point.pk} as VM {name} ({vm.id})")
    return {"vm_id": vm.id, "vm_name": name, "disks": new_ids}


def create_vm_from_ovf(
    connection, *, name: str, cluster_id: str, ovf: str, disk_ids: dict[str, str], job, cleanup: Cleanup
) -> types.Vm:
    """Recreate a VM from its saved OVF under `name`, its disks replaced by the new ones
    (`disk_ids`: old disk id -> new disk id, each already on the engine). The VM is recorded on the
    job and its removal put on the cleanup stack as soon as it exists; a disk the engine did not
    attach from the OVF is attached afterwards."""
    for old, new in disk_ids.items():
        ovf = ovf.replace(old, new)
    # Disks the point does not hold (excluded from the backup) or this restore leaves out are not
    # the new VM's: left in, the engine would look for them, and refuse those the source VM has.
    ovf = without_disks(ovf, keep=set(disk_ids.values()))
    vms = connection.system_service().vms_service()
    try:
        vm = vms.add(
            types.Vm(
                name=name,
                cluster=types.Cluster(id=cluster_id),
                initialization=types.Initialization(
                    configuration=types.Configuration(type=types.ConfigurationType.OVF, data=ovf)
                ),
            ),
            clone=True,
        )
    except sdk.Error as e:
        raise JobError(f"The engine refused to create the VM from the saved OVF: {fault_text(e)}") from None
    job.remember_engine_object("vm", vm.id, name=name)
    cleanup.add(f"remove VM {name}", lambda: remove_vm(connection, vm.id, name=name, job=job))
    try:
        attached = {a.disk.id for a in vms.vm_service(vm.id).disk_attachments_service().list()}
        for new in disk_ids.values():
            if new not in attached:
                attach_disk(connection, vm.id, new)
    except sdk.Error as e:
        raise JobError(f"The engine refused to attach a restored disk to VM {name}: {fault_text(e)}") from None
    return vm


def _target_vm(connection, ref: str):
    """The VM named `ref`, or whose id it is."""
    found = find_vm(connection, ref)
    if found is None:
        try:
            found = connection.system_service().vms_service().vm_service(ref).get()
        except sdk.Error:
            found = None
    if found is None:
        raise JobError(f"No VM {ref!r} on the engine to attach the restored disks to.")
    return found


def _cluster(system, wanted: str, ovf: str):
    clusters = system.clusters_service().list()
    if wanted:
        found = [c for c in clusters if c.name == wanted or c.id == wanted]
        if not found:
            raise JobError(f"No cluster {wanted!r} on the engine (clusters: {', '.join(c.name for c in clusters)}).")
        return found[0]
    match = re.search(r"<ClusterName>([^<]*)</ClusterName>", ovf)
    found = [c for c in clusters if match and c.name == match.group(1)]
    if found:
        return found[0]
    raise JobError("The VM's original cluster no longer exists; choose a cluster for the restore.")


def _storage_domain(domains: list, wanted: str, entry: ManifestDisk):
    """The chosen data domain, else the disk's original one, else the first data domain."""
    if wanted:
        found = [d for d in domains if d.name == wanted or d.id == wanted]
        if not found:
            raise JobError(f"No data storage domain {wanted!r} on the engine.")
        return found[0]
    original = [d for d in domains if d.id == entry.storage_domain_id]
    if original:
        return original[0]
    if not domains:
        raise JobError("The engine has no data storage domain to restore into.")
    return domains[0]


def on_block_storage(domain: types.StorageDomain) -> bool:
    """Whether the storage domain is a block one (FC or iSCSI: its volumes are LVs)."""
    return domain.storage is not None and domain.storage.type in (types.StorageType.ISCSI, types.StorageType.FCP)


def _disk_spec(entry: ManifestDisk, domain, job, allocation: str = "original") -> types.Disk:
    """The new disk: the format and allocation the original disk was created with (as the point
    recorded them), or the allocation asked for, within the engine's rules for the domain (a
    RAW disk on block storage is preallocated, a QCOW2 one preallocated only with incremental
    backup); each change from what the disk was is said on the job."""
    fmt, sparse = entry.disk_format, entry.sparse
    if allocation != "original":
        sparse = allocation == "thin"
    backup = entry.backup_enabled and fmt == "cow"
    if on_block_storage(domain) and fmt == "raw" and sparse:
        if allocation == "thin":
            fmt = "cow"
            job.log(
                "warning",
                f"Disk {entry.alias}: RAW disks on block storage domain {domain.name} cannot be thin; "
                "restoring it as a thin QCOW2 disk, as thin was asked for.",
            )
        else:
            sparse = False
            job.log(
                "warning",
                f"Disk {entry.alias}: RAW disks on block storage domain {domain.name} cannot be thin; "
                "restoring it preallocated.",
            )
    elif fmt == "cow" and not sparse and not backup:
        fmt = "raw"
        job.log(
            "warning",
            f"Disk {entry.alias}: the engine preallocates QCOW2 disks only with incremental backup enabled, "
            "which this disk did not have; restoring it as a preallocated RAW disk, as asked.",
        )
    return types.Disk(
        name=entry.alias,
        provisioned_size=entry.virtual_size,
        format=types.DiskFormat(fmt),
        sparse=sparse,
        storage_domains=[types.StorageDomain(id=domain.id)],
        backup=types.DiskBackup.INCREMENTAL if backup else None,
    )


def _upload(conn, path: Path, disk, job, *, base: int, total: int, before_finalize: Callable[[], None]) -> None:
    """Upload the image at `path` (read through its chain) into the new disk; `before_finalize` may
    raise to cancel the transfer instead of finalizing it."""
    with tracked_transfer(
        conn,
        disk_id=disk.id,
        direction="upload",
        fmt="raw",
        job=job,
        base=base,
        total=total,
        what=f"uploading disk {disk.alias}",
    ) as (handle, progress):
        try:
            client.upload(
                str(path),
                handle.url,  # the path the job names: the host, or the engine's proxy
                conn.ca_file,
                secure=conn.verify_tls,
                progress=progress,
            )
        except Cancelled:
            raise
        except Exception:
            before_finalize()  # stored files that differ are the cause to tell, not what qemu made of them
            raise
        before_finalize()


def _refuse_damaged(problem: str) -> None:
    if problem:
        raise JobError(f"The backup is damaged: {problem} Nothing was restored.")


def _whole_chain(point: BackupPoint, disk_id: str) -> list[tuple[Path, str]]:
    """The files a disk of the point is read from, with their checksums, refused (before anything
    is made on the engine) when one is missing or the manifests do not link them."""
    try:
        files = chain_files(point, disk_id)
    except RepositoryError as e:
        _refuse_damaged(str(e))
    for path, _ in files:
        try:
            open_stored(path).close()  # there, a regular file, not a link to something else
        except FileNotFoundError:
            _refuse_damaged(f"{path} is missing.")
        except RepositoryError as e:
            _refuse_damaged(str(e))
        except OSError as e:
            _refuse_damaged(f"{path} cannot be read: {e.strerror or e}.")
    return files


def _refuse_mismatch(stored: Future, disk, job: Job) -> None:
    """Once a disk's data has moved and before it is finalized: the stored files it was read from
    matched their checksums, or the restore fails (and the cleanup stack removes the new disk). The
    checksums may still be running (a long chain holds more than the upload reads): the job beats and
    may be cancelled meanwhile, so it is not taken for one whose worker died."""
    problem = awaited_problem(stored, job)
    if problem:
        raise JobError(
            f"The backup is damaged: {problem} The restored disk {disk.alias} was not finalized and is "
            "removed; nothing was restored."
        )


def restore_placement(job: Job) -> Placement:
    """A node serving the cluster the VM is restored into: the one asked for, else the backed-up
    VM's (a disk restore: the VM's); the node the point's destination is local to if it is."""
    if job.params.get("transfer") == PROXY:
        # Inside a proxy VM of the cluster restored into, which serves that cluster.
        return proxy_restore_placement(job).both(point_placement(job.params.get("point")))
    if job.params.get("export_domain"):
        # On the node serving the data center's staging share, which the export domain is on.
        return export_restore_placement(job).both(point_placement(job.params.get("point")))
    cluster = job.params.get("cluster") or ""
    if not cluster and job.vm is not None and job.vm.cluster is not None:
        cluster = job.vm.cluster.name
    return in_cluster(cluster or None).both(point_placement(job.params.get("point")))


def restore_slots(job: Job) -> list[dict]:
    """The VM's slots (its manager, host, storage domains); through a proxy, one of its places too."""
    slots = vm_slots(job)
    if job.params.get("transfer") == PROXY:
        slots += proxy_restore_slots(job)
    return slots
