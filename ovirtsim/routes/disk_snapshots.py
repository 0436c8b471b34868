"""Disk snapshots (volumes), listed per storage domain and per disk."""

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import limit
from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


@router.add("GET", API + "/storagedomains/{id}/disksnapshots")
def list_disk_snapshots(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    result = []
    with req.engine.store.lock:
        for disk in req.engine.store["disks"].values():
            if disk["sd_id"] != sd["id"]:
                continue
            for snap in req.engine.store["snapshots"].values():
                volume_id = snap["volumes"].get(disk["id"])
                if snap["type"] == "regular" and volume_id:
                    volume = next(v for v in disk["volumes"] if v["id"] == volume_id)
                    result.append(req.views.disk_snapshot(disk, volume, snap))
    return to_xml(limit(result, req), "disk_snapshots")


def _disk_snapshot_of(req, *, owner_key: str, owner: str, under: str | None = None):
    """One disk snapshot, found only under the storage domain or disk it belongs to."""
    disk, volume, snap = req.engine.disk_snapshot(req.params["id"])
    if disk[owner_key] != req.params[owner]:
        raise not_found("disksnapshots", req.params["id"])
    return to_xml(req.views.disk_snapshot(disk, volume, snap, under=under and under.format(**disk)))


@router.add("GET", API + "/storagedomains/{sd}/disksnapshots/{id}")
def get_disk_snapshot(req):
    return _disk_snapshot_of(req, owner_key="sd_id", owner="sd")


@router.add("GET", API + "/disks/{id}/disksnapshots")
def list_disk_disk_snapshots(req):
    """The volumes of one disk, oldest first; the active one only with include_active=true (4.5)."""
    disk = req.engine.get("disks", req.params["id"])
    under = f"disks/{disk['id']}/disksnapshots"
    result = []
    with req.engine.store.lock:
        vm = req.engine.vm_of_disk(disk["id"])
        for volume in disk["volumes"]:
            snap = req.engine.snapshot_of_volume(disk, volume["id"])
            if snap is None and volume is disk["volumes"][-1]:
                if not req.flag("include_active"):
                    continue
                snap = req.engine.store["snapshots"].get(vm["active_snapshot_id"]) if vm else None
            elif snap is None:
                continue  # a volume no snapshot points at any more (mid-merge)
            result.append(req.views.disk_snapshot(disk, volume, snap, under=under))
    return to_xml(limit(result, req), "disk_snapshots")


@router.add("GET", API + "/disks/{disk}/disksnapshots/{id}")
def get_disk_disk_snapshot(req):
    return _disk_snapshot_of(req, owner_key="id", owner="disk", under="disks/{id}/disksnapshots")
