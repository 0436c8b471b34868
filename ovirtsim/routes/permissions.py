"""Permissions: the admin's SuperUser permission, which every object inherits from the system."""

from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


def _permissions_route(kind: str):
    @router.add("GET", API + f"/{kind}/{{id}}/permissions")
    def list_permissions(req):
        req.engine.get(kind, req.params["id"])
        return to_xml([req.views.system_permission(kind, req.params["id"])], "permissions")


for _kind in ("vms", "hosts", "clusters", "datacenters", "storagedomains", "disks"):
    _permissions_route(_kind)
