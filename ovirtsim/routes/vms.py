"""VMs: list, get, add, update, remove, power actions; their NICs, statistics, reported devices."""

import ovirtsdk4.types as types

from ovirtsim.routes.listing import list_collection, name_of
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


def vm_search_attributes(engine) -> dict:
    def storage_names(vm):
        return [
            name_of(engine, "storagedomains", engine.store["disks"][a["disk_id"]]["sd_id"])
            for a in vm["disk_attachments"]
        ]

    def dc_name(vm):
        cluster = engine.store["clusters"].get(vm["cluster_id"])
        return name_of(engine, "datacenters", cluster["dc_id"]) if cluster else None

    return {
        "name": lambda vm: vm["name"],
        "id": lambda vm: vm["id"],
        "status": lambda vm: vm["status"],
        "cluster": lambda vm: name_of(engine, "clusters", vm["cluster_id"]),
        "cluster.name": lambda vm: name_of(engine, "clusters", vm["cluster_id"]),
        "datacenter": dc_name,
        "host": lambda vm: name_of(engine, "hosts", vm["host_id"]),
        "storage": storage_names,
        "storage.name": storage_names,
        "tag": lambda vm: [name_of(engine, "tags", t) for t in vm["tags"]],
        "description": lambda vm: vm["description"],
        "os": lambda vm: vm["os_type"],
    }


@router.add("GET", API + "/vms")
def list_vms(req):
    items = list_collection(req, "vms", vm_search_attributes(req.engine))
    follow, all_content = req.follow, req.flag("all_content")
    return to_xml([req.views.vm(vm, follow, all_content=all_content) for vm in items], "vms")


@router.add("POST", API + "/vms")
def add_vm(req):
    spec = read_body(req.body, types.Vm)
    vm = req.engine.add_vm(spec, clone=req.flag("clone"))
    if spec.snapshots and not (spec.initialization and spec.initialization.configuration):
        # A clone from a snapshot copies disks (vdsm tasks): 202 Accepted, the VM image_locked.
        return 202, to_xml(req.views.vm(vm))
    return 201, to_xml(req.views.vm(vm))


@router.add("GET", API + "/vms/{id}")
def get_vm(req):
    return to_xml(
        req.views.vm(req.engine.get("vms", req.params["id"]), req.follow, all_content=req.flag("all_content"))
    )


@router.add("PUT", API + "/vms/{id}")
def update_vm(req):
    return to_xml(req.views.vm(req.engine.update_vm(req.params["id"], read_body(req.body, types.Vm))))


@router.add("DELETE", API + "/vms/{id}")
def remove_vm(req):
    req.engine.remove_vm(req.params["id"], detach_only=req.flag("detach_only"))
    return None


for _action in ("start", "stop", "shutdown"):

    def _vm_action(req, action=_action):
        req.engine.vm_action(req.params["id"], action)
        return to_xml(types.Action(status="complete"))

    router.add("POST", API + "/vms/{id}/" + _action)(_vm_action)


@router.add("GET", API + "/vms/{id}/nics")
def list_nics(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml([req.views.nic(vm, n) for n in vm["nics"]], "nics")


@router.add("GET", API + "/vms/{id}/statistics")
def list_vm_statistics(req):
    vm = req.engine.get("vms", req.params["id"])
    up = vm["status"] == "up"
    values = [
        ("memory.installed", "bytes", vm["memory"]),
        ("memory.used", "bytes", vm["memory"] // 3 if up else 0),
        ("cpu.current.guest", "percent", 3.0 if up else 0.0),
        ("cpu.current.hypervisor", "percent", 0.5 if up else 0.0),
        ("cpu.current.total", "percent", 3.5 if up else 0.0),
        ("elapsed.time", "seconds", 3600 if up else 0),
    ]
    return to_xml(req.views.statistics("vms", vm["id"], values), "statistics")


@router.add("GET", API + "/vms/{id}/reporteddevices")
def list_reported_devices(req):
    return to_xml(req.views.reported_devices(req.engine.get("vms", req.params["id"])), "reported_devices")
