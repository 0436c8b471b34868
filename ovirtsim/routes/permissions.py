"""Users, roles and their permits, objects' permissions, and which permit each action needs.

An object's permissions are the system-wide ones it inherits: the admin's SuperUser role and each
user's roles. `required_permit` is the engine's permission check of the actions the simulator
has (ActionType's ActionGroup, or the command's own getPermissionCheckSubjects): a user whose
roles lack the permit gets the engine's 403.
"""

import re

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import filter_search
from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


def _permissions_route(kind: str):
    @router.add("GET", API + f"/{kind}/{{id}}/permissions")
    def list_permissions(req):
        req.engine.get(kind, req.params["id"])
        inherited = [p for user in req.engine.users()[1:] for p in req.views.user_permissions(user)]
        return to_xml([req.views.system_permission(kind, req.params["id"]), *inherited], "permissions")


for _kind in ("vms", "hosts", "clusters", "datacenters", "storagedomains", "disks"):
    _permissions_route(_kind)


def _user(req) -> dict:
    found = next((u for u in req.engine.users() if u["id"] == req.params["id"]), None)
    if found is None:
        raise not_found("users", req.params["id"])
    return found


def _role(req) -> dict:
    found = next((r for r in req.engine.roles() if r["id"] == req.params["id"]), None)
    if found is None:
        raise not_found("roles", req.params["id"])
    return found


@router.add("GET", API + "/users")
def list_users(req):
    attributes = {"usrname": lambda u: u["user_name"], "name": lambda u: u["principal"]}
    users = filter_search(req.engine.users(), req.query_value("search"), attributes)
    return to_xml([req.views.user(u) for u in users], "users")


@router.add("GET", API + "/users/{id}")
def get_user(req):
    return to_xml(req.views.user(_user(req)))


@router.add("GET", API + "/users/{id}/permissions")
def list_user_permissions(req):
    return to_xml(req.views.user_permissions(_user(req)), "permissions")


@router.add("GET", API + "/roles")
def list_roles(req):
    return to_xml([req.views.role(r) for r in req.engine.roles()], "roles")


@router.add("GET", API + "/roles/{id}")
def get_role(req):
    return to_xml(req.views.role(_role(req)))


@router.add("GET", API + "/roles/{id}/permits")
def list_permits(req):
    return to_xml(req.views.permits(_role(req)), "permits")


def _vm_add(body: bytes) -> tuple[str, str]:
    # POST /vms with an OVF configuration is ImportVmFromConfiguration, otherwise AddVm.
    if b"<configuration" in body:
        return "import_export_vm", "import VM"
    return "create_vm", "add VM"


# (method, path, permit and the words of the engine's "Cannot ..." for it), first match wins.
_ID = r"[^/]+"
PERMIT_RULES = [
    ("POST", rf"/vms/{_ID}/snapshots", ("manipulate_vm_snapshots", "create Snapshot")),
    ("DELETE", rf"/vms/{_ID}/snapshots/{_ID}", ("manipulate_vm_snapshots", "remove Snapshot")),
    ("POST", r"/imagetransfers", ("edit_disk_properties", "transfer Virtual Disk")),
    ("POST", rf"/imagetransfers/{_ID}/\w+", ("edit_disk_properties", "transfer Virtual Disk")),
    ("POST", rf"/vms/{_ID}/backups", ("backup_disk", "backup VM")),
    ("POST", rf"/vms/{_ID}/backups/{_ID}/finalize", ("backup_disk", "stop VM backup")),
    ("DELETE", rf"/vms/{_ID}/checkpoints/{_ID}", ("backup_disk", "remove Checkpoint")),
    ("POST", r"/disks", ("create_disk", "add Virtual Disk")),
    ("DELETE", rf"/disks/{_ID}", ("delete_disk", "remove Virtual Disk")),
    ("DELETE", rf"/storagedomains/{_ID}/disks/{_ID}", ("delete_disk", "remove Virtual Disk")),
    ("PUT", rf"/disks/{_ID}", ("configure_vm_storage", "edit Virtual Disk")),
    # MoveDisk's permit on the disk (the engine also checks create_disk on the target domain).
    ("POST", rf"/disks/{_ID}/move", ("configure_disk_storage", "move Virtual Disk")),
    ("POST", r"/vms", _vm_add),
    ("POST", rf"/vms/{_ID}/export", ("import_export_vm", "export VM")),
    ("POST", rf"/storagedomains/{_ID}/vms/{_ID}/import", ("import_export_vm", "import VM")),
    ("POST", rf"/storagedomains/{_ID}/vms/{_ID}/register", ("import_export_vm", "import VM")),
    ("DELETE", rf"/storagedomains/{_ID}", ("delete_storage_domain", "remove Storage")),
    ("DELETE", rf"/storagedomains/{_ID}/vms/{_ID}", ("delete_vm", "remove VM")),
    ("POST", r"/storagedomains", ("create_storage_domain", "add Storage")),
    ("POST", rf"/datacenters/{_ID}/storagedomains", ("manipulate_storage_domain", "attach Storage")),
    (
        "POST",
        rf"/datacenters/{_ID}/storagedomains/{_ID}/deactivate",
        ("manipulate_storage_domain", "deactivate Storage"),
    ),
    ("POST", rf"/datacenters/{_ID}/storagedomains/{_ID}/activate", ("manipulate_storage_domain", "activate Storage")),
    ("DELETE", rf"/datacenters/{_ID}/storagedomains/{_ID}", ("manipulate_storage_domain", "detach Storage")),
    ("DELETE", rf"/vms/{_ID}", ("delete_vm", "remove VM")),
    ("PUT", rf"/vms/{_ID}", ("edit_vm_properties", "edit VM")),
    ("POST", rf"/vms/{_ID}/start", ("run_vm", "run VM")),
    ("POST", rf"/vms/{_ID}/stop", ("stop_vm", "stop VM")),
    ("POST", rf"/vms/{_ID}/shutdown", ("shut_down_vm", "shutdown VM")),
    ("POST", rf"/vms/{_ID}/diskattachments", ("configure_vm_storage", "attach Virtual Disk")),
    ("PUT", rf"/vms/{_ID}/diskattachments/{_ID}", ("configure_vm_storage", "edit Virtual Disk")),
    ("DELETE", rf"/vms/{_ID}/diskattachments/{_ID}", ("configure_vm_storage", "detach Virtual Disk")),
]
_COMPILED = [(m, re.compile("^" + re.escape(API) + p + "/?$"), rule) for m, p, rule in PERMIT_RULES]


def required_permit(method: str, path: str, body: bytes) -> tuple[str, str] | None:
    """(permit, action words) the request needs, or None for what every user may do (reading)."""
    for m, regex, rule in _COMPILED:
        if m == method and regex.match(path):
            return rule(body) if callable(rule) else rule
    return None
