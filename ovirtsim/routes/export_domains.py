"""Export storage domains: a VM's export, what a domain holds (`vms`, `templates`), removal and
import of a VM from it.

Export and import answer as the engine answers an action that started tasks: 202 Accepted with the
action `pending` and its job, unless the client asked to block (`<async>false</async>`), then when
the job ended, `complete` or `failed`.
"""

import time

import ovirtsdk4.types as types

from ovirtsim.errors import not_found
from ovirtsim.routes.imported_domains import list_unregistered_vms, unregistered
from ovirtsim.routes.router import router
from ovirtsim.views import API, href, read_body, to_xml

# How long a blocking action (async=false) waits for its job, as the REST API's awaitCompletion.
BLOCKING_TIMEOUT = 600


def action_started(req, job: dict, action: types.Action):
    job_ref = types.Job(id=job["id"])
    job_ref.href = href("jobs", job["id"])
    if action.async_ is False:
        deadline = time.monotonic() + BLOCKING_TIMEOUT
        while job["status"] == "started" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = "complete" if job["status"] == "finished" else "failed"
        return to_xml(types.Action(status=status, job=job_ref))
    return 202, to_xml(types.Action(status="pending", async_=True, job=job_ref))


@router.add("POST", API + "/vms/{id}/export")
def export_vm(req):
    action = read_body(req.body, types.Action)
    return action_started(req, req.engine.export_vm(req.params["id"], action), action)


@router.add("GET", API + "/storagedomains/{id}/vms")
def list_exported_vms(req):
    """An export domain's VMs, read from its share; a data domain's unregistered ones (imported_domains)."""
    if unregistered(req):
        return list_unregistered_vms(req)
    sd = req.engine.get("storagedomains", req.params["id"])
    return to_xml([req.views.exported_vm(sd, vm) for vm in req.engine.exported(sd["id"])], "vms")


@router.add("GET", API + "/storagedomains/{id}/vms/{vm}")
def get_exported_vm(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    if sd["type"] == "data":
        return to_xml(req.views.exported_vm(sd, req.engine.unregistered_vm(sd["id"], req.params["vm"])))
    return to_xml(req.views.exported_vm(sd, req.engine.exported_vm(sd["id"], req.params["vm"])))


@router.add("DELETE", API + "/storagedomains/{id}/vms/{vm}")
def remove_exported_vm(req):
    req.engine.remove_exported_vm(req.params["id"], req.params["vm"])
    return None


@router.add("GET", API + "/storagedomains/{id}/vms/{vm}/disks")
def list_exported_vm_disks(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    vm = req.engine.exported_vm(sd["id"], req.params["vm"])
    return to_xml([req.views.exported_disk(sd, vm, d) for d in vm.disks], "disks")


@router.add("GET", API + "/storagedomains/{id}/vms/{vm}/disks/{disk}")
def get_exported_vm_disk(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    vm = req.engine.exported_vm(sd["id"], req.params["vm"])
    for disk in vm.disks:
        if disk.disk_id == req.params["disk"]:
            return to_xml(req.views.exported_disk(sd, vm, disk))
    raise not_found("disks", req.params["disk"])


def _collapse_snapshots(req) -> bool:
    """The engine reads `collapse_snapshots` from the URL (query or matrix parameter, a bare name
    meaning true) or a header, never from the action's body: ovirtsdk4's `collapse_snapshots=`
    argument, which goes in the body, is ignored, as on the engine."""
    value = req.query_value("collapse_snapshots")
    if value is None:
        value = req.handler.headers.get("collapse_snapshots")
    if value is None:
        return False
    return value == "" or value.lower() == "true"


@router.add("POST", API + "/storagedomains/{id}/vms/{vm}/import")
def import_exported_vm(req):
    action = read_body(req.body, types.Action)
    job = req.engine.import_vm(req.params["id"], req.params["vm"], action, collapse=_collapse_snapshots(req))
    return action_started(req, job, action)


@router.add("GET", API + "/storagedomains/{id}/templates")
def list_exported_templates(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    items = req.engine.exported(sd["id"], templates=True)
    return to_xml([req.views.exported_template(sd, t) for t in items], "templates")


@router.add("GET", API + "/storagedomains/{id}/templates/{template}")
def get_exported_template(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    return to_xml(req.views.exported_template(sd, req.engine.exported_template(sd["id"], req.params["template"])))


@router.add("POST", API + "/storagedomains")
def add_storage_domain(req):
    sd = req.engine.add_storage_domain(read_body(req.body, types.StorageDomain))
    return 201, to_xml(req.views.storage_domain(sd))


@router.add("POST", API + "/datacenters/{id}/storagedomains")
def attach_storage_domain(req):
    sd = req.engine.attach_storage_domain(req.params["id"], read_body(req.body, types.StorageDomain))
    return 201, to_xml(req.views.storage_domain(sd))


@router.add("GET", API + "/datacenters/{id}/storagedomains/{sd}")
def get_attached_storage_domain(req):
    sd = req.engine.get("storagedomains", req.params["sd"])
    if sd.get("dc_id") != req.engine.get("datacenters", req.params["id"])["id"]:
        raise not_found("storagedomains", req.params["sd"])
    return to_xml(req.views.storage_domain(sd))


for _action in ("activate", "deactivate"):

    def _domain_action(req, action=_action):
        getattr(req.engine, f"{action}_storage_domain")(req.params["id"], req.params["sd"])
        return to_xml(types.Action(status="complete"))

    router.add("POST", API + "/datacenters/{id}/storagedomains/{sd}/" + _action)(_domain_action)


@router.add("DELETE", API + "/datacenters/{id}/storagedomains/{sd}")
def detach_storage_domain(req):
    req.engine.detach_storage_domain(req.params["id"], req.params["sd"])
    return None
