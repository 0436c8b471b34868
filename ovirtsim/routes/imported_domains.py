"""An imported data domain: its unregistered VMs and disks, registering a VM, removing the domain.

The unregistered listings are `GET /storagedomains/{id}/vms` and `.../disks` with `unregistered`
(ovirtsdk4 sends `?unregistered=true`; the engine reads it as a query or matrix parameter, a bare
`;unregistered` meaning true), answered from export_domains.py's and storage_domains.py's routes.
"""

import ovirtsdk4.types as types

from ovirtsim.routes.router import router
from ovirtsim.views import API, href, read_body, to_xml
from ovirtsim.views.base import build, ref


def unregistered(req) -> bool:
    value = req.query_value("unregistered")
    return value is not None and value.lower() in ("", "true")


def list_unregistered_vms(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    return to_xml([req.views.exported_vm(sd, vm) for vm in req.engine.unregistered_vms(sd["id"])], "vms")


def list_unregistered_disks(req):
    sd = req.engine.get("storagedomains", req.params["id"])
    disks = []
    for image in req.engine.unregistered_disks(sd["id"]):
        leaf, base = image.leaf, image.volumes[0]
        description = image.description
        disks.append(
            build(
                types.Disk,
                id=image.id,
                href=href("storagedomains", sd["id"], "disks", image.id),
                name=description.get("DiskAlias", ""),
                alias=description.get("DiskAlias", ""),
                description=description.get("DiskDescription", ""),
                provisioned_size=int(leaf["meta"].get("CAP") or 0),
                format=build(types.DiskFormat, leaf["format"]),
                sparse=base["meta"].get("TYPE") != "PREALLOCATED",
                status=types.DiskStatus.OK,
                storage_type=types.DiskStorageType.IMAGE,
                content_type=types.DiskContentType.DATA,
                image_id=leaf["id"],
                storage_domains=[ref(types.StorageDomain, "storagedomains", sd["id"])],
            )
        )
    return to_xml(disks, "disks")


@router.add("POST", API + "/storagedomains/{id}/vms/{vm}/register")
def register_vm(req):
    from ovirtsim.routes.export_domains import action_started

    action = read_body(req.body, types.Action)
    if action.async_ is None:
        action.async_ = False  # the engine blocks on a registration unless asked not to
    return action_started(req, req.engine.register_vm(req.params["id"], req.params["vm"], action), action)


@router.add("DELETE", API + "/storagedomains/{id}")
def remove_storage_domain(req):
    """`host` and `format` come as query (or matrix) parameters, as ovirtsdk4 sends them."""
    fmt = (req.query_value("format") or "false").lower()
    req.engine.remove_storage_domain(req.params["id"], host=req.query_value("host"), format_=fmt in ("", "true"))
    return None
