"""Export storage domains (legacy), as the export domain strategy uses them: the data center's export
domain, a VM cloned from a snapshot, a VM exported there and waited for, and removed from it again."""

from datetime import UTC, datetime

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.errors import EngineError, fault_text
from ovirt.leftovers import LeftForNow, UndoContext, register_undo
from ovirt.polling import remove_recorded, retry_engine, wait_for
from ovirt.vms import last_event, vm_service

# The record a job keeps of a VM it exported to an export domain (job.remember_engine_object).
EXPORTED_VM = "exported_vm"
# An export or a clone copies whole disks: hours for large ones.
COPY_TIMEOUT = 24 * 3600


def data_center_export_domain(connection, data_center_id: str) -> types.StorageDomain | None:
    """The export domain attached to the data center (the engine allows one), or None."""
    attached = (
        connection.system_service()
        .data_centers_service()
        .data_center_service(data_center_id)
        .storage_domains_service()
        .list()
    )
    return next((sd for sd in attached if sd.type == types.StorageDomainType.EXPORT), None)


def _exported_vms_service(connection, storage_domain_id: str):
    return connection.system_service().storage_domains_service().storage_domain_service(storage_domain_id).vms_service()


def exported_vms(connection, storage_domain_id: str) -> list[types.Vm]:
    """The VMs the export domain holds (the engine reads the OVFs on its share)."""
    return _exported_vms_service(connection, storage_domain_id).list()


def exported_vm_ids(connection, storage_domain_id: str) -> set[str]:
    return {v.id for v in exported_vms(connection, storage_domain_id)}


def clone_vm_from_snapshot(
    connection, *, snapshot_id: str, name: str, cluster_id: str, job=None, source: str = ""
) -> str:
    """Start making a new VM from a snapshot (the engine copies each of its disks, collapsed); it is
    recorded on the job as soon as the engine answers. Returns its id: wait with `wait_cloned`."""
    vms = connection.system_service().vms_service()
    try:
        vm = vms.add(
            types.Vm(name=name, cluster=types.Cluster(id=cluster_id), snapshots=[types.Snapshot(id=snapshot_id)])
        )
    except sdk.Error as e:
        raise EngineError(f"The engine refused to clone VM {source} from its snapshot: {fault_text(e)}") from None
    if job is not None:
        job.remember_engine_object("vm", vm.id, name=name)
    return vm.id


def wait_cloned(connection, vm_id: str, *, name: str, source: str = "", job=None) -> None:
    """Until the clone is down with its disks copied (the engine removes a clone whose copy failed)."""
    service = vm_service(connection, vm_id)

    def created():
        try:
            current = service.get()
        except sdk.NotFoundError:
            raise EngineError(f"The engine could not clone VM {source} from its snapshot into {name}.") from None
        return current.status == types.VmStatus.DOWN

    wait_for(created, what=f"VM {name} to be cloned", timeout=COPY_TIMEOUT, job=job)


def export_vm(connection, vm_id: str, *, storage_domain: types.StorageDomain, name: str, job=None) -> datetime:
    """Start exporting a stopped VM to the export domain, its snapshots collapsed into one volume per
    disk and replacing a copy the domain may hold (`exclusive`). Recorded on the job once the engine
    accepted it: a worker that dies meanwhile leaves a record the reaper removes from the domain.
    Returns when it started: wait with `wait_exported`."""
    started = datetime.now(UTC)
    try:
        retry_engine(
            lambda: vm_service(connection, vm_id).export(
                storage_domain=types.StorageDomain(id=storage_domain.id), exclusive=True, discard_snapshots=True
            ),
            what=f"Exporting VM {name}",
            job=job,
            idempotent=False,
        )
    except sdk.Error as e:
        raise EngineError(
            f"The engine refused to export VM {name} to export domain {storage_domain.name}: {fault_text(e)}"
        ) from None
    if job is not None:
        job.remember_engine_object(EXPORTED_VM, vm_id, name=name, domain=storage_domain.id)
    return started


def wait_exported(
    connection, vm_id: str, *, storage_domain: types.StorageDomain, name: str, started: datetime, job=None
) -> None:
    """Until the engine has written the export; its failure is told with the engine's events."""
    wait_export_ended(connection, vm_id, name=name, job=job)
    if vm_id not in exported_vm_ids(connection, storage_domain.id):
        raise EngineError(
            f"The engine failed to export VM {name} to export domain {storage_domain.name}: "
            f"{last_event(connection, vm_id, since=started)}"
        )


def wait_export_ended(connection, vm_id: str, *, name: str, job=None, cancellable: bool = True) -> None:
    """The engine locks the VM while an export runs (image_locked), and unlocks it whatever the end."""
    service = vm_service(connection, vm_id)

    def ended():
        try:
            return service.get().status != types.VmStatus.IMAGE_LOCKED
        except sdk.NotFoundError:
            return True

    wait_for(ended, what=f"the export of VM {name} to end", timeout=COPY_TIMEOUT, job=job, cancellable=cancellable)


def remove_exported_vm(connection, storage_domain_id: str, vm_id: str, *, name: str = "", job=None) -> None:
    """Remove a VM from the export domain (its OVF and its images on the share); gone already is fine.
    While the engine still writes it (409, "being exported now") it is asked again."""
    what = f"Removing VM {name or vm_id} from the export domain"
    exported = _exported_vms_service(connection, storage_domain_id).vm_service(vm_id)
    # Its "exported_vm" record only: the clone it was exported from is recorded under the same id.
    remove_recorded(exported.remove, what=what, job=job, record=vm_id, kind=EXPORTED_VM)


def _undo_exported_vm(context: UndoContext, record: dict) -> str:
    try:
        remove_exported_vm(
            context.connection, record["domain"], record["id"], name=record.get("name", ""), job=context.job
        )
    except EngineError as e:
        if "being exported now" in str(e):
            raise LeftForNow(str(e)) from None
        raise
    return f"Removed VM {record.get('name') or record['id']} from the export domain, where this job had exported it"


def _describe_exported_vm(record: dict) -> str:
    name = record.get("name")
    vm = f"VM {name} ({record['id']})" if name else f"VM {record['id']}"
    return f"{vm} exported to export domain {record['domain']}"


# Recorded after the clone it exports, so undone before it: the clone can go once its export has.
register_undo(EXPORTED_VM, _undo_exported_vm, describe=_describe_exported_vm)
