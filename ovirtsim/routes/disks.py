"""Disks: list, get, add, update (edit, extend), remove, statistics."""

import ovirtsdk4.types as types

from ovirtsim.routes.export_domains import action_started
from ovirtsim.routes.listing import name_of, read_routes
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


def disk_search_attributes(engine) -> dict:
    return {
        "name": lambda d: d["name"],
        "alias": lambda d: d["name"],
        "id": lambda d: d["id"],
        "status": lambda d: d["status"],
        "format": lambda d: d["format"],
        "storage": lambda d: name_of(engine, "storagedomains", d["sd_id"]),
        "storage.name": lambda d: name_of(engine, "storagedomains", d["sd_id"]),
        "description": lambda d: d["description"],
    }


read_routes("disks", "disks", "disk", disk_search_attributes)


@router.add("POST", API + "/disks")
def add_disk(req):
    disk = req.engine.add_disk(read_body(req.body, types.Disk))
    return 201, to_xml(req.views.disk(disk))


@router.add("PUT", API + "/disks/{id}")
def update_disk(req):
    disk = req.engine.update_disk(req.params["id"], read_body(req.body, types.Disk))
    return to_xml(req.views.disk(disk))


@router.add("DELETE", API + "/disks/{id}")
def remove_disk(req):
    req.engine.remove_disk(req.params["id"])
    return None


@router.add("POST", API + "/disks/{id}/move")
def move_disk(req):
    """MoveDisk: 202 with the job (or, with async=false, once it ended); see engine/disk_moves.py."""
    action = read_body(req.body, types.Action)
    return action_started(req, req.engine.move_disk(req.params["id"], action), action)


@router.add("GET", API + "/disks/{id}/statistics")
def list_disk_statistics(req):
    disk = req.engine.get("disks", req.params["id"])
    values = [("data.current.read", "bytes_per_second", 0.0), ("data.current.write", "bytes_per_second", 0.0)]
    return to_xml(req.views.statistics("disks", disk["id"], values), "statistics")
