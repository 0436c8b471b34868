"""VMs and their disks as the engine reports them."""

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from django.core.exceptions import ValidationError

from ovirt.errors import EngineError, fault_text
from ovirt.polling import remove_recorded

# The engine's rule for a VM's name (ovirt-engine's VmStatic.getName: @ValidI18NName, the pattern
# ^[\p{L}0-9._-]*$, and the MaxVmNameLength setting, 64 by default): the one definition of it here,
# asked by every form, API and command that names a new VM, so a name the engine would refuse is
# refused before anything is queued, not by the engine halfway through a job.
VM_NAME_MAX = 64
VM_NAME_RULE = f"at most {VM_NAME_MAX} letters, digits, '-', '_' or '.'"


def vm_name_problem(name: str) -> str:
    """Why the engine would refuse `name` for a VM, in words; "" when it takes it."""
    # str.isalpha is the engine's \p{L} (letters of any alphabet); its digits are ASCII only.
    wrong = sorted({c for c in name if not (c.isalpha() or c in "0123456789-_.")})
    if wrong:
        shown = ", ".join(repr(c) for c in wrong)
        return f"The engine takes a VM name of {VM_NAME_RULE}; this one has {shown}."
    if len(name) > VM_NAME_MAX:
        return f"The engine takes a VM name of {VM_NAME_RULE}; this one has {len(name)} characters."
    return ""


def validate_vm_name(name: str) -> None:
    """vm_name_problem as a form's or a serializer's validator (both take Django's ValidationError)."""
    problem = vm_name_problem(name)
    if problem:
        raise ValidationError(problem, code="invalid_vm_name")


def vm_service(connection, vm_id: str):
    return connection.system_service().vms_service().vm_service(vm_id)


def vm_is_down(connection, vm_id: str) -> bool:
    """The engine reports the VM down (powered off: no qemu holds its disks), now."""
    return vm_service(connection, vm_id).get().status == types.VmStatus.DOWN


def vm_disks(connection, vm_id: str) -> list[types.Disk]:
    attachments = vm_service(connection, vm_id).disk_attachments_service().list(follow="disk")
    return [a.disk for a in attachments]


def find_vm(connection, name: str) -> types.Vm | None:
    """The VM with exactly this name (the engine's search matches patterns), or None."""
    found = connection.system_service().vms_service().list(search=f"name={name}")
    return next((v for v in found if v.name == name), None)


def remove_vm(connection, vm_id: str, *, name: str = "", job=None) -> None:
    """Remove a VM (with its disks), waiting out a brief lock; gone already is fine. Its record on
    the job goes only once it is gone; a removal that fails raises EngineError in words."""
    what = f"Removing VM {name} ({vm_id})" if name else f"Removing VM {vm_id}"
    # Its "vm" record only: a clone's export to an export domain is recorded under the same id.
    remove_recorded(vm_service(connection, vm_id).remove, what=what, job=job, record=vm_id, kind="vm")


def attach_disk(connection, vm_id: str, disk_id: str, *, bootable: bool | None = None) -> None:
    """Attach a disk to a VM, active, on VirtIO-SCSI."""
    try:
        vm_service(connection, vm_id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk_id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=bootable, active=True
            )
        )
    except sdk.Error as e:
        raise EngineError(f"The engine refused to attach disk {disk_id} to VM {vm_id}: {fault_text(e)}") from None


def _vm_events(connection, vm_id: str, count: int) -> list[types.Event]:
    """The engine's newest `count` events about a VM, newest first (none if the engine cannot list
    them: they only explain a failure already told)."""
    try:
        vm = vm_service(connection, vm_id).get()
        return connection.system_service().events_service().list(search=f"vm.name={vm.name}", max=count)
    except sdk.Error:
        return []


def _problems(events: list[types.Event]) -> list[types.Event]:
    return [e for e in events if e.severity in (types.LogSeverity.ERROR, types.LogSeverity.WARNING)]


def last_event(connection, vm_id: str, *, since=None) -> str:
    """The newest warning or error the engine logged about a VM: its explanation of a failure. With
    `since` (a datetime), every warning and error from then on, oldest first: the engine often logs
    the cause (a vdsm command that failed) just before the failure itself."""
    events = _vm_events(connection, vm_id, 10)
    errors = _problems(events)
    if since is not None:
        recent = [e.description for e in reversed(errors) if e.time is not None and e.time >= since]
        if recent:
            return "; ".join(recent)
    return (errors or events)[0].description if (errors or events) else "no detail available"


def event_naming(connection, vm_id: str, words: str) -> str:
    """The newest warning or error the engine logged about a VM whose text holds `words` ("" if none)."""
    problems = _problems(_vm_events(connection, vm_id, 20))
    return next((e.description for e in problems if words in (e.description or "")), "")
