"""A VM's disk attachments."""

import ovirtsdk4.types as types

from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


@router.add("GET", API + "/vms/{id}/diskattachments")
def list_attachments(req):
    vm = req.engine.get("vms", req.params["id"])
    follow = req.follow
    # The VM's own disks, then other VMs' disk snapshots attached to it (a backup appliance's).
    attachments = req.engine.vm_attachments(vm)
    return to_xml([req.views.disk_attachment(vm, a, follow) for a in attachments], "disk_attachments")


@router.add("POST", API + "/vms/{id}/diskattachments")
def add_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    attachment = req.engine.add_attachment(vm["id"], read_body(req.body, types.DiskAttachment))
    return 201, to_xml(req.views.disk_attachment(vm, attachment))


@router.add("GET", API + "/vms/{id}/diskattachments/{disk}")
def get_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml(req.views.disk_attachment(vm, req.engine.get_attachment(vm["id"], req.params["disk"]), req.follow))


@router.add("PUT", API + "/vms/{id}/diskattachments/{disk}")
def update_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    attachment = req.engine.update_attachment(vm["id"], req.params["disk"], read_body(req.body, types.DiskAttachment))
    return to_xml(req.views.disk_attachment(vm, attachment))


@router.add("DELETE", API + "/vms/{id}/diskattachments/{disk}")
def remove_attachment(req):
    detach_only = req.query_value("detach_only", "true").lower() != "false"
    req.engine.remove_attachment(req.params["id"], req.params["disk"], detach_only=detach_only)
    return None
