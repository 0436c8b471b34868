"""Storage domains and the disks on each."""

from ovirtsim.errors import not_found
from ovirtsim.routes.disks import disk_search_attributes
from ovirtsim.routes.imported_domains import list_unregistered_disks, unregistered
from ovirtsim.routes.listing import list_collection, name_of, read_routes
from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


def sd_search_attributes(engine) -> dict:
    return {
        "name": lambda sd: sd["name"],
        "id": lambda sd: sd["id"],
        "type": lambda sd: sd["type"],
        "status": lambda sd: engine.domain_status(sd),
        "datacenter": lambda sd: name_of(engine, "datacenters", sd.get("dc_id")),
        "storage.name": lambda sd: sd["name"],
    }


read_routes("storagedomains", "storage_domains", "storage_domain", sd_search_attributes)


@router.add("GET", API + "/storagedomains/{id}/disks")
def list_storagedomain_disks(req):
    if unregistered(req):
        return list_unregistered_disks(req)
    req.engine.get("storagedomains", req.params["id"])
    items = list_collection(
        req, "disks", disk_search_attributes(req.engine), where=lambda d: d["sd_id"] == req.params["id"]
    )
    return to_xml([req.views.disk(d) for d in items], "disks")


def _disk_on_domain(req) -> dict:
    disk = req.engine.get("disks", req.params["id"])
    if disk["sd_id"] != req.params["sd"]:
        raise not_found("disks", req.params["id"])
    return disk


@router.add("GET", API + "/storagedomains/{sd}/disks/{id}")
def get_storagedomain_disk(req):
    return to_xml(req.views.disk(_disk_on_domain(req), req.follow))


@router.add("DELETE", API + "/storagedomains/{sd}/disks/{id}")
def remove_storagedomain_disk(req):
    req.engine.remove_disk(_disk_on_domain(req)["id"])
    return None
