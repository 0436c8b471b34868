"""The slots a job on a VM holds while it moves the VM's data (jobs.kinds): its engine, the host it
runs on, and each storage domain its disks are on, each taking a limited number of such jobs at once
(MAX_JOBS_PER_MANAGER, MAX_JOBS_PER_HOST, MAX_JOBS_PER_STORAGE_DOMAIN)."""

from django.conf import settings

from inventory.models import VM, StorageDomain


def vm_slots(job) -> list[dict]:
    if job.vm_id is None:
        return []
    vm = VM.objects.select_related("manager", "host").filter(pk=job.vm_id).first()
    if vm is None:
        return []
    slots = [
        {
            "key": f"manager:{vm.manager_id}",
            "limit": settings.MAX_JOBS_PER_MANAGER,
            "label": f"jobs already run on manager {vm.manager}",
        }
    ]
    if vm.host_id:
        limit = settings.MAX_JOBS_PER_HOST
        slots.append({"key": f"host:{vm.host_id}", "limit": limit, "label": f"jobs already run on host {vm.host}"})
    for pk, name in StorageDomain.objects.filter(disk__vm=vm).distinct().order_by("pk").values_list("pk", "name"):
        slots.append(
            {
                "key": f"storage_domain:{pk}",
                "limit": settings.MAX_JOBS_PER_STORAGE_DOMAIN,
                "label": f"jobs already use storage domain {name}",
            }
        )
    return slots
