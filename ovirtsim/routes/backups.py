"""A VM's backups (start, finalize, their disks) and checkpoints (list, remove)."""

import ovirtsdk4.types as types

from ovirtsim.errors import not_found
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


@router.add("GET", API + "/vms/{id}/backups")
def list_backups(req):
    with req.engine.store.lock:
        return to_xml([req.views.backup(b) for b in req.engine.vm_backups(req.params["id"])], "backups")


@router.add("POST", API + "/vms/{id}/backups")
def add_backup(req):
    backup = req.engine.add_backup(
        req.params["id"], read_body(req.body, types.Backup), require_consistency=req.flag("require_consistency")
    )
    with req.engine.store.lock:
        return 201, to_xml(req.views.backup(backup))


@router.add("GET", API + "/vms/{id}/backups/{backup}")
def get_backup(req):
    with req.engine.store.lock:
        return to_xml(req.views.backup(req.engine.vm_backup(req.params["id"], req.params["backup"])))


@router.add("POST", API + "/vms/{id}/backups/{backup}/finalize")
def finalize_backup(req):
    req.engine.finalize_backup(req.params["id"], req.params["backup"])
    return to_xml(types.Action(status="complete"))


@router.add("GET", API + "/vms/{id}/backups/{backup}/disks")
def list_backup_disks(req):
    with req.engine.store.lock:
        backup = req.engine.vm_backup(req.params["id"], req.params["backup"])
        return to_xml(req.views.backup_disks(backup), "disks")


@router.add("GET", API + "/vms/{id}/backups/{backup}/disks/{disk}")
def get_backup_disk(req):
    with req.engine.store.lock:
        backup = req.engine.vm_backup(req.params["id"], req.params["backup"])
        for disk in req.views.backup_disks(backup):
            if disk.id == req.params["disk"]:
                return to_xml(disk)
    raise not_found("disks", req.params["disk"])


@router.add("GET", API + "/vms/{id}/checkpoints")
def list_checkpoints(req):
    with req.engine.store.lock:
        items = req.engine.vm_checkpoints(req.params["id"])
        return to_xml([req.views.checkpoint(c) for c in items], "checkpoints")


@router.add("GET", API + "/vms/{id}/checkpoints/{checkpoint}")
def get_checkpoint(req):
    with req.engine.store.lock:
        return to_xml(req.views.checkpoint(req.engine.vm_checkpoint(req.params["id"], req.params["checkpoint"])))


@router.add("DELETE", API + "/vms/{id}/checkpoints/{checkpoint}")
def remove_checkpoint(req):
    req.engine.remove_checkpoint(req.params["id"], req.params["checkpoint"])
    return None


@router.add("GET", API + "/vms/{id}/checkpoints/{checkpoint}/disks")
def list_checkpoint_disks(req):
    with req.engine.store.lock:
        checkpoint = req.engine.vm_checkpoint(req.params["id"], req.params["checkpoint"])
        return to_xml(req.views.checkpoint_disks(checkpoint), "disks")
