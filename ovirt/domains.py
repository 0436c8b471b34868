"""Data storage domains brought in from an NFS share and taken out again, VMs registered from them,
and disks moved between domains: what instant restore asks of the engine.

An imported domain is recorded on the job as it is made (kind IMPORTED_DOMAIN): a dead worker's
domain is taken out by the reaper as `remove_imported_domain` does it (maintenance, detach, remove
without formatting: the share's files are the node's business)."""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text
from ovirt.leftovers import UndoContext, register_undo
from ovirt.polling import remove_recorded, retry_engine, wait_for
from ovirt.vms import last_event

IMPORTED_DOMAIN = "imported_domain"
# A VM registered from an imported domain: it may be running (from the domain) when it is undone,
# so its undo powers it off first.
REGISTERED_VM = "registered_vm"
DOMAIN_TIMEOUT = 600  # seconds for a domain to reach a state (the engine mounts, reads the OVF stores)
MOVE_TIMEOUT = 24 * 3600


def _domains(connection):
    return connection.system_service().storage_domains_service()


def _attached(connection, data_center_id: str, domain_id: str):
    dc = connection.system_service().data_centers_service().data_center_service(data_center_id)
    return dc.storage_domains_service().storage_domain_service(domain_id)


def import_nfs_domain(
    connection, *, name: str, host: str, address: str, path: str, port: int, data_center_id: str, job=None
) -> types.StorageDomain:
    """The data domain on the share ADDRESS:PATH brought into the engine (not yet attached), recorded
    with the data center it is meant for (its undo detaches it from there when it got attached)."""
    try:
        domain = _domains(connection).add(
            types.StorageDomain(
                name=name,
                type=types.StorageDomainType.DATA,
                import_=True,
                host=types.Host(name=host),
                # The hosts mount port 2049 unless told (a node's NFS server on another port).
                storage=types.HostStorage(
                    type=types.StorageType.NFS,
                    address=address,
                    path=path,
                    mount_options=f"port={port}" if port != 2049 else None,
                ),
            )
        )
    except sdk.Error as e:
        raise EngineError(
            f"The engine refused to import the storage domain on {address}:{path}: {fault_text(e)}"
        ) from None
    if job is not None:
        job.remember_engine_object(IMPORTED_DOMAIN, domain.id, name=name, host=host, data_center=data_center_id)
    return domain


def domain_status_in(connection, data_center_id: str, domain_id: str) -> types.StorageDomainStatus | None:
    try:
        return _attached(connection, data_center_id, domain_id).get().status
    except sdk.NotFoundError:
        return None


def attach_domain(connection, *, data_center_id: str, domain_id: str, name: str, job=None) -> None:
    """Attach the domain to the data center and wait until the engine has activated it."""
    dc = connection.system_service().data_centers_service().data_center_service(data_center_id)
    try:
        dc.storage_domains_service().add(types.StorageDomain(id=domain_id))
    except sdk.Error as e:
        raise EngineError(f"The engine refused to attach storage domain {name}: {fault_text(e)}") from None
    status = wait_for(
        lambda: _settled(domain_status_in(connection, data_center_id, domain_id)),
        what=f"storage domain {name} to become active",
        timeout=DOMAIN_TIMEOUT,
        job=job,
        interval=0.2,
    )
    if status != types.StorageDomainStatus.ACTIVE:
        raise EngineError(f"Storage domain {name} did not become active: it is {status.value}.")


def _settled(status):
    if status in (types.StorageDomainStatus.LOCKED, types.StorageDomainStatus.ACTIVATING, None):
        return None
    return status


def unregistered_vms(connection, domain_id: str) -> list[types.Vm]:
    return _domains(connection).storage_domain_service(domain_id).vms_service().list(unregistered=True)


def register_vm(connection, *, domain_id: str, vm_id: str, name: str, cluster: str, job=None) -> types.Vm:
    """Register the VM the domain's OVF store holds, under `name` in `cluster`, MACs in use elsewhere
    reassigned (the original VM may still run with them); recorded as a VM of the job."""
    service = _domains(connection).storage_domain_service(domain_id).vms_service().vm_service(vm_id)
    try:
        service.register(
            cluster=types.Cluster(name=cluster),
            vm=types.Vm(name=name),
            allow_partial_import=False,
            reassign_bad_macs=True,
        )
    except sdk.Error as e:
        raise EngineError(f"The engine refused to register VM {name}: {fault_text(e)}") from None
    if job is not None:
        job.remember_engine_object(REGISTERED_VM, vm_id, name=name)
    vms = connection.system_service().vms_service()

    def registered() -> types.Vm | None:
        try:
            vm = vms.vm_service(vm_id).get()
        except sdk.NotFoundError:
            # The engine removes a VM whose registration failed, and logs why.
            raise EngineError(f"The engine failed to register VM {name}: {last_event(connection, vm_id)}") from None
        return vm if vm.status == types.VmStatus.DOWN else None

    return wait_for(registered, what=f"VM {name} to be registered", timeout=DOMAIN_TIMEOUT, job=job, interval=0.2)


def remove_imported_domain(
    connection, *, domain_id: str, name: str, host: str, data_center_id: str = "", job=None
) -> None:
    """Take the domain out of the engine: to maintenance, detached, removed without formatting (its
    files stay on the share). Each step is skipped when already done; the job's record goes last."""
    if data_center_id and domain_status_in(connection, data_center_id, domain_id) is not None:
        attached = _attached(connection, data_center_id, domain_id)
        if attached.get().status != types.StorageDomainStatus.MAINTENANCE:
            retry_engine(attached.deactivate, what=f"Deactivating storage domain {name}", job=job)
            wait_for(
                lambda: (
                    domain_status_in(connection, data_center_id, domain_id)
                    in (types.StorageDomainStatus.MAINTENANCE, None)
                ),
                what=f"storage domain {name} to enter maintenance",
                timeout=DOMAIN_TIMEOUT,
                job=job,
                interval=0.2,
                cancellable=False,
            )
        retry_engine(attached.remove, what=f"Detaching storage domain {name}", job=job)
    remove_recorded(
        lambda: _domains(connection).storage_domain_service(domain_id).remove(host=host, format=False),
        what=f"Removing storage domain {name}",
        job=job,
        record=domain_id,
        kind=IMPORTED_DOMAIN,
    )


def move_disk(connection, *, disk_id: str, alias: str, domain: str, job=None, progress=None) -> None:
    """Move a disk to the storage domain named (live when its VM runs) and wait until the engine has
    done it; `progress(fraction)` is told what the engine reports meanwhile."""
    service = connection.system_service().disks_service().disk_service(disk_id)
    try:
        target = _domains(connection).list(search=f"name={domain}")
        target = [d for d in target if d.name == domain]
        if not target:
            raise EngineError(f"No storage domain named {domain} on the engine.")
        before = service.get().storage_domains[0].id
        if before == target[0].id:
            return  # moved already (a migration asked again after it failed on a later disk)
        service.move(storage_domain=types.StorageDomain(id=target[0].id))
    except sdk.Error as e:
        raise EngineError(f"The engine refused to move disk {alias} to {domain}: {fault_text(e)}") from None

    jobs = connection.system_service().jobs_service()

    def moved():
        disk = service.get()
        if progress is not None:
            done = _move_progress(jobs, alias)
            if done is not None:
                progress(done)
        if disk.status == types.DiskStatus.LOCKED:
            return None
        if disk.storage_domains[0].id == target[0].id:
            return True
        if disk.status == types.DiskStatus.OK and disk.storage_domains[0].id == before:
            raise EngineError(f"The engine did not move disk {alias} to {domain} (see its events).")
        return None

    wait_for(moved, what=f"disk {alias} to move to {domain}", timeout=MOVE_TIMEOUT, job=job, interval=0.5)


def stop_and_remove_vm(connection, vm_id: str, *, name: str, job=None) -> None:
    """Power the VM off (at once: it runs from a domain about to go) and remove it with its disks; gone
    already is fine. The job's record of it goes once it is gone."""
    service = connection.system_service().vms_service().vm_service(vm_id)
    try:
        vm = service.get()
    except sdk.NotFoundError:
        if job is not None:
            job.forget_engine_object(vm_id, kind=REGISTERED_VM)
        return
    if vm.status != types.VmStatus.DOWN:
        retry_engine(service.stop, what=f"Stopping VM {name}", job=job)
        wait_for(
            lambda: service.get().status == types.VmStatus.DOWN,
            what=f"VM {name} to be down",
            timeout=DOMAIN_TIMEOUT,
            job=job,
            interval=0.1,
            cancellable=False,
        )
    remove_recorded(service.remove, what=f"Removing VM {name} ({vm_id})", job=job, record=vm_id, kind=REGISTERED_VM)


def _move_progress(jobs, alias: str) -> float | None:
    """How far the engine's job moving the disk says it is (its steps' progress, 0..1), if it says."""
    for job in jobs.list():
        if job.status == types.JobStatus.STARTED and (job.description or "").startswith(f"Moving Disk {alias} "):
            reported = [s.progress for s in jobs.job_service(job.id).steps_service().list() if s.progress is not None]
            return max(reported) / 100 if reported else None
    return None


def _undo_imported_domain(context: UndoContext, record: dict) -> str:
    remove_imported_domain(
        context.connection,
        domain_id=record["id"],
        name=record.get("name", ""),
        host=record.get("host", ""),
        data_center_id=record.get("data_center", ""),
    )
    return f"Removed storage domain {record.get('name', '')} ({record['id']}), its files left on the share"


def _undo_registered_vm(context: UndoContext, record: dict) -> str:
    stop_and_remove_vm(context.connection, record["id"], name=record.get("name", ""))
    return f"Powered off and removed VM {record.get('name', '')} ({record['id']}), registered from an imported domain"


register_undo(
    REGISTERED_VM,
    _undo_registered_vm,
    describe=lambda record: f"VM {record.get('name', '')} ({record['id']}) registered from an imported domain",
)
register_undo(
    IMPORTED_DOMAIN,
    _undo_imported_domain,
    describe=lambda record: f"imported storage domain {record.get('name', '')} ({record['id']})",
)
