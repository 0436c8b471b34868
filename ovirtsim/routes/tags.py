"""Tags, and the tags assigned to a VM."""

import ovirtsdk4.types as types

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import read_routes
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


def tag_search_attributes(engine) -> dict:
    return {"name": lambda t: t["name"], "id": lambda t: t["id"]}


read_routes("tags", "tags", "tag", tag_search_attributes)


@router.add("POST", API + "/tags")
def add_tag(req):
    return 201, to_xml(req.views.tag(req.engine.add_tag(read_body(req.body, types.Tag))))


@router.add("DELETE", API + "/tags/{id}")
def remove_tag(req):
    req.engine.remove_tag(req.params["id"])
    return None


@router.add("GET", API + "/vms/{id}/tags")
def list_vm_tags(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml(
        [req.views.tag(req.engine.store["tags"][t]) for t in vm["tags"] if t in req.engine.store["tags"]], "tags"
    )


@router.add("POST", API + "/vms/{id}/tags")
def assign_vm_tag(req):
    return 201, to_xml(req.views.tag(req.engine.assign_vm_tag(req.params["id"], read_body(req.body, types.Tag))))


@router.add("GET", API + "/vms/{id}/tags/{tag}")
def get_vm_tag(req):
    vm = req.engine.get("vms", req.params["id"])
    if req.params["tag"] not in vm["tags"]:
        raise not_found("tags", req.params["tag"])
    return to_xml(req.views.tag(req.engine.get("tags", req.params["tag"])))


@router.add("DELETE", API + "/vms/{id}/tags/{tag}")
def unassign_vm_tag(req):
    req.engine.unassign_vm_tag(req.params["id"], req.params["tag"])
    return None
