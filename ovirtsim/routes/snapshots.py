"""A VM's snapshots and the disks in each."""

import ovirtsdk4.types as types

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import limit
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


@router.add("GET", API + "/vms/{id}/snapshots")
def list_snapshots(req):
    vm = req.engine.get("vms", req.params["id"])
    follow, all_content = req.follow, req.flag("all_content")
    with req.engine.store.lock:
        result = [req.views.snapshot(vm, s, follow, all_content=all_content) for s in req.engine.vm_snapshots(vm["id"])]
    return to_xml(limit(result, req), "snapshots")


@router.add("POST", API + "/vms/{id}/snapshots")
def add_snapshot(req):
    vm = req.engine.get("vms", req.params["id"])
    snap = req.engine.add_snapshot(
        vm["id"], read_body(req.body, types.Snapshot), require_consistency=req.flag("require_consistency")
    )
    return 201, to_xml(req.views.snapshot(vm, snap))


def _vm_snapshot(req) -> tuple[dict, dict]:
    vm = req.engine.get("vms", req.params["id"])
    snap = req.engine.store["snapshots"].get(req.params["snap"])
    if snap is None or snap["vm_id"] != vm["id"]:
        raise not_found("snapshots", req.params["snap"])
    return vm, snap


@router.add("GET", API + "/vms/{id}/snapshots/{snap}")
def get_snapshot(req):
    vm, snap = _vm_snapshot(req)
    return to_xml(req.views.snapshot(vm, snap, req.follow, all_content=req.flag("all_content")))


@router.add("DELETE", API + "/vms/{id}/snapshots/{snap}")
def remove_snapshot(req):
    vm, snap = _vm_snapshot(req)
    req.engine.remove_snapshot(vm["id"], snap["id"])
    return None


@router.add("GET", API + "/vms/{id}/snapshots/{snap}/disks")
def list_snapshot_disks(req):
    vm, snap = _vm_snapshot(req)
    return to_xml(req.views.snapshot_disks(vm, snap), "disks")
