"""HTTPS front of the simulated engine: SSO, the PKI resource, the REST API v4 and a control API.

Requests are served by a thread each; the engine's state lock is taken only around state
reads and changes, never while data moves.
"""

import base64
import fnmatch
import json
import logging
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import ovirtsdk4.types as types

from ovirtsim import qemu
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found
from ovirtsim.views import API, ZERO_UUID, Views, parse_follow, read_body, to_xml

log = logging.getLogger("ovirtsim.http")

SEARCH_TERM = re.compile(r"^\s*([\w.]+)\s*(!=|=)\s*(.+?)\s*$")
ENUM_SEARCH_KEYS = {"status", "type", "format", "severity"}
DEFAULT_PAGE_SIZE = 100


class Router:
    def __init__(self):
        self.routes: list[tuple[str, re.Pattern, object]] = []

    def add(self, method: str, pattern: str):
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")

        def register(fn):
            self.routes.append((method, regex, fn))
            return fn

        return register

    def match(self, method: str, path: str):
        allowed = False
        for m, regex, fn in self.routes:
            found = regex.match(path)
            if found:
                if m == method:
                    return fn, found.groupdict()
                allowed = True
        if allowed:
            raise EngineFault(405, f"Method {method} is not allowed on {path}", reason="Method Not Allowed")
        raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")


routes = Router()


class Request:
    def __init__(self, handler: "Handler", engine, views: Views, params: dict, query: dict, body: bytes):
        self.handler = handler
        self.engine = engine
        self.views = views
        self.params = params
        self.query = query
        self.body = body

    def query_value(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def flag(self, name: str) -> bool:
        value = self.query.get(name) or self.handler.headers.get(name.replace("_", "-").title())
        return (value or "").lower() == "true"

    @property
    def follow(self) -> dict:
        return parse_follow(self.query_value("follow"))


# ----- search -------------------------------------------------------------------------------


def _search(items: list[dict], search: str | None, attributes: dict, *, case_sensitive: bool = True) -> list[dict]:
    """The engine's search: `key=value` terms joined by `and`, `*` wildcards, `!=`. Text is
    compared with its case unless the client passed case_sensitive=false (the engine's default
    is true); enumerated values (status, type, format...) match in any case, as there."""
    if not search:
        return items
    terms = []
    for raw in re.split(r"\s+and\s+", search.strip(), flags=re.IGNORECASE):
        m = SEARCH_TERM.match(raw)
        if not m:
            raise bad_request(f"Cannot parse search query '{search}'")
        key, op, value = m.group(1).lower(), m.group(2), m.group(3).strip().strip('"').strip("'")
        if key not in attributes:
            raise bad_request(f"Unknown search attribute '{key}' in query '{search}'")
        fold = not case_sensitive or key in ENUM_SEARCH_KEYS
        terms.append((attributes[key], op, value.lower() if fold else value, fold))

    def matches(item):
        for getter, op, pattern, fold in terms:
            values = getter(item)
            values = values if isinstance(values, (list, set, tuple)) else [values]
            hit = any(
                v is not None and fnmatch.fnmatchcase(str(v).lower() if fold else str(v), pattern) for v in values
            )
            if hit != (op == "="):
                return False
        return True

    return [item for item in items if matches(item)]


def _page(search: str | None) -> tuple[str | None, int]:
    """Split the engine's paging suffix off a search: "name=a* page 2" -> ("name=a*", 2)."""
    m = re.search(r"(?:^|\s)page\s+(\d+)\s*$", search or "", flags=re.IGNORECASE)
    if not m:
        return search, 1
    page = int(m.group(1))
    if page < 1:
        raise bad_request(f"Cannot parse search query '{search}': pages are numbered from 1")
    return search[: m.start()].strip() or None, page


def _limit(items: list, req: Request, page: int = 1) -> list:
    """`max` items of page `page` (the engine's page size is `max`, else its default of 100)."""
    m = req.query_value("max")
    try:
        size = int(m) if m is not None else None
    except ValueError:
        raise bad_request(f"Value '{m}' of parameter 'max' is not a valid integer") from None
    if size is not None and size < 0:
        size = None
    if page > 1:
        start = (page - 1) * (size if size is not None else DEFAULT_PAGE_SIZE)
        items = items[start:]
    return items[:size] if size is not None else items


def _name_of(engine, collection, ident):
    item = engine.store[collection].get(ident) if ident else None
    return item["name"] if item else None


def vm_search_attributes(engine) -> dict:
    def storage_names(vm):
        return [
            _name_of(engine, "storagedomains", engine.store["disks"][a["disk_id"]]["sd_id"])
            for a in vm["disk_attachments"]
        ]

    def dc_name(vm):
        cluster = engine.store["clusters"].get(vm["cluster_id"])
        return _name_of(engine, "datacenters", cluster["dc_id"]) if cluster else None

    return {
        "name": lambda vm: vm["name"],
        "id": lambda vm: vm["id"],
        "status": lambda vm: vm["status"],
        "cluster": lambda vm: _name_of(engine, "clusters", vm["cluster_id"]),
        "cluster.name": lambda vm: _name_of(engine, "clusters", vm["cluster_id"]),
        "datacenter": dc_name,
        "host": lambda vm: _name_of(engine, "hosts", vm["host_id"]),
        "storage": storage_names,
        "storage.name": storage_names,
        "tag": lambda vm: [_name_of(engine, "tags", t) for t in vm["tags"]],
        "description": lambda vm: vm["description"],
        "os": lambda vm: vm["os_type"],
    }


def disk_search_attributes(engine) -> dict:
    return {
        "name": lambda d: d["name"],
        "alias": lambda d: d["name"],
        "id": lambda d: d["id"],
        "status": lambda d: d["status"],
        "format": lambda d: d["format"],
        "storage": lambda d: _name_of(engine, "storagedomains", d["sd_id"]),
        "storage.name": lambda d: _name_of(engine, "storagedomains", d["sd_id"]),
        "description": lambda d: d["description"],
    }


def sd_search_attributes(engine) -> dict:
    return {
        "name": lambda sd: sd["name"],
        "id": lambda sd: sd["id"],
        "type": lambda sd: sd["type"],
        "status": lambda sd: "active" if sd.get("dc_id") else "unattached",
        "datacenter": lambda sd: _name_of(engine, "datacenters", sd.get("dc_id")),
        "storage.name": lambda sd: sd["name"],
    }


def host_search_attributes(engine) -> dict:
    return {
        "name": lambda h: h["name"],
        "id": lambda h: h["id"],
        "status": lambda h: h["status"],
        "address": lambda h: h["address"],
        "cluster": lambda h: _name_of(engine, "clusters", h["cluster_id"]),
        "datacenter": lambda h: _name_of(
            engine, "datacenters", (engine.store["clusters"].get(h["cluster_id"]) or {}).get("dc_id")
        ),
    }


def cluster_search_attributes(engine) -> dict:
    return {
        "name": lambda c: c["name"],
        "id": lambda c: c["id"],
        "datacenter": lambda c: _name_of(engine, "datacenters", c["dc_id"]),
    }


def tag_search_attributes(engine) -> dict:
    return {"name": lambda t: t["name"], "id": lambda t: t["id"]}


def dc_search_attributes(engine) -> dict:
    return {"name": lambda d: d["name"], "id": lambda d: d["id"], "status": lambda d: "up"}


def _list(req: Request, collection: str, attributes: dict, where=None) -> list[dict]:
    """A collection as a list call returns it: `where` (a sub-collection's own items), then the
    search, then the page and `max`."""
    items = sorted(req.engine.store[collection].values(), key=lambda x: x.get("name", x["id"]))
    if where is not None:
        items = [x for x in items if where(x)]
    search, page = _page(req.query_value("search"))
    case_sensitive = (req.query_value("case_sensitive") or "true").lower() != "false"
    return _limit(_search(items, search, attributes, case_sensitive=case_sensitive), req, page)


# ----- API root, data centers, clusters, hosts ---------------------------------------------------


@routes.add("GET", API)
def api_root(req):
    return to_xml(req.views.api())


def _read_routes(collection: str, root: str, view: str, attributes) -> None:
    """List (search, page, max, follow) and get of a top-level collection, as the engine serves them."""

    @routes.add("GET", API + f"/{collection}")
    def list_all(req):
        items = _list(req, collection, attributes(req.engine))
        return to_xml([getattr(req.views, view)(item, req.follow) for item in items], root)

    @routes.add("GET", API + f"/{collection}/{{id}}")
    def get_one(req):
        return to_xml(getattr(req.views, view)(req.engine.get(collection, req.params["id"]), req.follow))


for _read in (
    ("datacenters", "data_centers", "data_center", dc_search_attributes),
    ("clusters", "clusters", "cluster", cluster_search_attributes),
    ("hosts", "hosts", "host", host_search_attributes),
    ("tags", "tags", "tag", tag_search_attributes),
    ("storagedomains", "storage_domains", "storage_domain", sd_search_attributes),
    ("disks", "disks", "disk", disk_search_attributes),
):
    _read_routes(*_read)


@routes.add("GET", API + "/datacenters/{id}/clusters")
def list_datacenter_clusters(req):
    req.engine.get("datacenters", req.params["id"])
    items = _list(
        req, "clusters", cluster_search_attributes(req.engine), where=lambda c: c["dc_id"] == req.params["id"]
    )
    return to_xml([req.views.cluster(c) for c in items], "clusters")


@routes.add("GET", API + "/datacenters/{id}/storagedomains")
def list_datacenter_storagedomains(req):
    req.engine.get("datacenters", req.params["id"])
    items = _list(
        req, "storagedomains", sd_search_attributes(req.engine), where=lambda s: s.get("dc_id") == req.params["id"]
    )
    return to_xml([req.views.storage_domain(s) for s in items], "storage_domains")


@routes.add("POST", API + "/tags")
def add_tag(req):
    return 201, to_xml(req.views.tag(req.engine.add_tag(read_body(req.body, types.Tag))))


@routes.add("DELETE", API + "/tags/{id}")
def remove_tag(req):
    req.engine.remove_tag(req.params["id"])
    return None


# ----- storage domains ----------------------------------------------------------------------


@routes.add("GET", API + "/storagedomains/{id}/disks")
def list_storagedomain_disks(req):
    req.engine.get("storagedomains", req.params["id"])
    items = _list(req, "disks", disk_search_attributes(req.engine), where=lambda d: d["sd_id"] == req.params["id"])
    return to_xml([req.views.disk(d) for d in items], "disks")


@routes.add("GET", API + "/storagedomains/{id}/disksnapshots")
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
    return to_xml(_limit(result, req), "disk_snapshots")


def _disk_snapshot_of(req, *, owner_key: str, owner: str, under: str | None = None):
    """One disk snapshot, found only under the storage domain or disk it belongs to."""
    disk, volume, snap = req.engine.disk_snapshot(req.params["id"])
    if disk[owner_key] != req.params[owner]:
        raise not_found("disksnapshots", req.params["id"])
    return to_xml(req.views.disk_snapshot(disk, volume, snap, under=under and under.format(**disk)))


@routes.add("GET", API + "/storagedomains/{sd}/disksnapshots/{id}")
def get_disk_snapshot(req):
    return _disk_snapshot_of(req, owner_key="sd_id", owner="sd")


@routes.add("GET", API + "/disks/{id}/disksnapshots")
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
    return to_xml(_limit(result, req), "disk_snapshots")


@routes.add("GET", API + "/disks/{disk}/disksnapshots/{id}")
def get_disk_disk_snapshot(req):
    return _disk_snapshot_of(req, owner_key="id", owner="disk", under="disks/{id}/disksnapshots")


# ----- disks --------------------------------------------------------------------------------


@routes.add("POST", API + "/disks")
def add_disk(req):
    disk = req.engine.add_disk(read_body(req.body, types.Disk))
    return 201, to_xml(req.views.disk(disk))


@routes.add("DELETE", API + "/disks/{id}")
def remove_disk(req):
    req.engine.remove_disk(req.params["id"])
    return None


def _disk_on_domain(req) -> dict:
    disk = req.engine.get("disks", req.params["id"])
    if disk["sd_id"] != req.params["sd"]:
        raise not_found("disks", req.params["id"])
    return disk


@routes.add("GET", API + "/storagedomains/{sd}/disks/{id}")
def get_storagedomain_disk(req):
    return to_xml(req.views.disk(_disk_on_domain(req), req.follow))


@routes.add("DELETE", API + "/storagedomains/{sd}/disks/{id}")
def remove_storagedomain_disk(req):
    req.engine.remove_disk(_disk_on_domain(req)["id"])
    return None


# ----- VMs ----------------------------------------------------------------------------------


@routes.add("GET", API + "/vms")
def list_vms(req):
    items = _list(req, "vms", vm_search_attributes(req.engine))
    follow, all_content = req.follow, req.flag("all_content")
    return to_xml([req.views.vm(vm, follow, all_content=all_content) for vm in items], "vms")


@routes.add("POST", API + "/vms")
def add_vm(req):
    vm = req.engine.add_vm(read_body(req.body, types.Vm), clone=req.flag("clone"))
    return 201, to_xml(req.views.vm(vm))


@routes.add("GET", API + "/vms/{id}")
def get_vm(req):
    return to_xml(
        req.views.vm(req.engine.get("vms", req.params["id"]), req.follow, all_content=req.flag("all_content"))
    )


@routes.add("PUT", API + "/vms/{id}")
def update_vm(req):
    return to_xml(req.views.vm(req.engine.update_vm(req.params["id"], read_body(req.body, types.Vm))))


@routes.add("DELETE", API + "/vms/{id}")
def remove_vm(req):
    req.engine.remove_vm(req.params["id"], detach_only=req.flag("detach_only"))
    return None


for _action in ("start", "stop", "shutdown"):

    def _vm_action(req, action=_action):
        req.engine.vm_action(req.params["id"], action)
        return to_xml(types.Action(status="complete"))

    routes.add("POST", API + "/vms/{id}/" + _action)(_vm_action)


@routes.add("GET", API + "/vms/{id}/diskattachments")
def list_attachments(req):
    vm = req.engine.get("vms", req.params["id"])
    follow = req.follow
    return to_xml([req.views.disk_attachment(vm, a, follow) for a in vm["disk_attachments"]], "disk_attachments")


@routes.add("POST", API + "/vms/{id}/diskattachments")
def add_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    a = req.engine.add_attachment(vm["id"], read_body(req.body, types.DiskAttachment))
    return 201, to_xml(req.views.disk_attachment(vm, a))


@routes.add("GET", API + "/vms/{id}/diskattachments/{disk}")
def get_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml(req.views.disk_attachment(vm, req.engine.get_attachment(vm["id"], req.params["disk"]), req.follow))


@routes.add("PUT", API + "/vms/{id}/diskattachments/{disk}")
def update_attachment(req):
    vm = req.engine.get("vms", req.params["id"])
    a = req.engine.update_attachment(vm["id"], req.params["disk"], read_body(req.body, types.DiskAttachment))
    return to_xml(req.views.disk_attachment(vm, a))


@routes.add("DELETE", API + "/vms/{id}/diskattachments/{disk}")
def remove_attachment(req):
    detach_only = req.query_value("detach_only", "true").lower() != "false"
    req.engine.remove_attachment(req.params["id"], req.params["disk"], detach_only=detach_only)
    return None


@routes.add("GET", API + "/vms/{id}/nics")
def list_nics(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml([req.views.nic(vm, n) for n in vm["nics"]], "nics")


@routes.add("GET", API + "/vms/{id}/tags")
def list_vm_tags(req):
    vm = req.engine.get("vms", req.params["id"])
    return to_xml(
        [req.views.tag(req.engine.store["tags"][t]) for t in vm["tags"] if t in req.engine.store["tags"]], "tags"
    )


@routes.add("POST", API + "/vms/{id}/tags")
def assign_vm_tag(req):
    return 201, to_xml(req.views.tag(req.engine.assign_vm_tag(req.params["id"], read_body(req.body, types.Tag))))


@routes.add("GET", API + "/vms/{id}/tags/{tag}")
def get_vm_tag(req):
    vm = req.engine.get("vms", req.params["id"])
    if req.params["tag"] not in vm["tags"]:
        raise not_found("tags", req.params["tag"])
    return to_xml(req.views.tag(req.engine.get("tags", req.params["tag"])))


@routes.add("DELETE", API + "/vms/{id}/tags/{tag}")
def unassign_vm_tag(req):
    req.engine.unassign_vm_tag(req.params["id"], req.params["tag"])
    return None


# ----- what entities link to besides their main sub-collections -------------------------------
# Minimal, but every link the simulator writes answers, as on an engine.


def _permissions_route(kind: str):
    @routes.add("GET", API + f"/{kind}/{{id}}/permissions")
    def list_permissions(req):
        req.engine.get(kind, req.params["id"])
        return to_xml([req.views.system_permission(kind, req.params["id"])], "permissions")


for _kind in ("vms", "hosts", "clusters", "datacenters", "storagedomains", "disks"):
    _permissions_route(_kind)


@routes.add("GET", API + "/vms/{id}/statistics")
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


@routes.add("GET", API + "/hosts/{id}/statistics")
def list_host_statistics(req):
    host = req.engine.get("hosts", req.params["id"])
    values = [
        ("memory.total", "bytes", 256 * 1024**3),
        ("memory.used", "bytes", 64 * 1024**3),
        ("cpu.current.user", "percent", 12.0),
        ("cpu.current.system", "percent", 3.0),
        ("cpu.current.idle", "percent", 85.0),
        ("boot.time", "seconds", 1_700_000_000),
    ]
    return to_xml(req.views.statistics("hosts", host["id"], values), "statistics")


@routes.add("GET", API + "/disks/{id}/statistics")
def list_disk_statistics(req):
    disk = req.engine.get("disks", req.params["id"])
    values = [("data.current.read", "bytes_per_second", 0.0), ("data.current.write", "bytes_per_second", 0.0)]
    return to_xml(req.views.statistics("disks", disk["id"], values), "statistics")


@routes.add("GET", API + "/vms/{id}/reporteddevices")
def list_reported_devices(req):
    return to_xml(req.views.reported_devices(req.engine.get("vms", req.params["id"])), "reported_devices")


@routes.add("GET", API + "/hosts/{id}/nics")
def list_host_nics(req):
    return to_xml([req.views.host_nic(req.engine.get("hosts", req.params["id"]))], "host_nics")


@routes.add("GET", API + "/datacenters/{id}/networks")
def list_datacenter_networks(req):
    dc = req.engine.get("datacenters", req.params["id"])
    return to_xml([req.views.management_network(dc["id"], under="networks")], "networks")


@routes.add("GET", API + "/networks")
def list_networks(req):
    search, page = _page(req.query_value("search"))
    nets = [req.views.management_network(dc["id"], under="networks") for dc in req.engine.store["datacenters"].values()]
    found = _search(nets, search, {"name": lambda n: n.name, "id": lambda n: n.id})
    return to_xml(_limit(found, req, page), "networks")


@routes.add("GET", API + "/networks/{id}")
def get_network(req):
    for dc in req.engine.store["datacenters"].values():
        network = req.views.management_network(dc["id"], under="networks")
        if network.id == req.params["id"]:
            return to_xml(network)
    raise not_found("networks", req.params["id"])


@routes.add("GET", API + "/clusters/{id}/networks")
def list_cluster_networks(req):
    cluster = req.engine.get("clusters", req.params["id"])
    network = req.views.management_network(cluster["dc_id"], under=f"clusters/{cluster['id']}/networks")
    return to_xml([network], "networks")


def _empty_route(kind: str, sub: str):
    @routes.add("GET", API + f"/{kind}/{{id}}/{sub}")
    def list_nothing(req):
        req.engine.get(kind, req.params["id"])
        return to_xml([], sub)


# Host tags, and VMs or templates on a data domain that the engine has not registered: none here.
for _kind, _sub in (("hosts", "tags"), ("storagedomains", "vms"), ("storagedomains", "templates")):
    _empty_route(_kind, _sub)


@routes.add("GET", API + "/templates")
def list_templates(req):
    search, page = _page(req.query_value("search"))
    blank = {"id": ZERO_UUID, "name": "Blank"}
    items = _search([blank], search, {"name": lambda t: t["name"], "id": lambda t: t["id"]})
    return to_xml([req.views.blank_template() for _ in _limit(items, req, page)], "templates")


@routes.add("GET", API + "/templates/{id}")
def get_template(req):
    if req.params["id"] != ZERO_UUID:
        raise not_found("templates", req.params["id"])
    return to_xml(req.views.blank_template())


@routes.add("GET", API + "/vms/{id}/snapshots")
def list_snapshots(req):
    vm = req.engine.get("vms", req.params["id"])
    follow, all_content = req.follow, req.flag("all_content")
    with req.engine.store.lock:
        result = [req.views.snapshot(vm, s, follow, all_content=all_content) for s in req.engine.vm_snapshots(vm["id"])]
    return to_xml(_limit(result, req), "snapshots")


@routes.add("POST", API + "/vms/{id}/snapshots")
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


@routes.add("GET", API + "/vms/{id}/snapshots/{snap}")
def get_snapshot(req):
    vm, snap = _vm_snapshot(req)
    return to_xml(req.views.snapshot(vm, snap, req.follow, all_content=req.flag("all_content")))


@routes.add("DELETE", API + "/vms/{id}/snapshots/{snap}")
def remove_snapshot(req):
    vm, snap = _vm_snapshot(req)
    req.engine.remove_snapshot(vm["id"], snap["id"])
    return None


@routes.add("GET", API + "/vms/{id}/snapshots/{snap}/disks")
def list_snapshot_disks(req):
    vm, snap = _vm_snapshot(req)
    return to_xml(req.views.snapshot_disks(vm, snap), "disks")


# ----- image transfers ---------------------------------------------------------------------


@routes.add("GET", API + "/imagetransfers")
def list_transfers(req):
    items = sorted(req.engine.store["imagetransfers"].values(), key=lambda t: t["created"])
    return to_xml([req.views.image_transfer(t) for t in _limit(items, req)], "image_transfers")


@routes.add("POST", API + "/imagetransfers")
def add_transfer(req):
    t = req.engine.add_transfer(read_body(req.body, types.ImageTransfer))
    return 201, to_xml(req.views.image_transfer(t))


@routes.add("GET", API + "/imagetransfers/{id}")
def get_transfer(req):
    return to_xml(req.views.image_transfer(req.engine.get("imagetransfers", req.params["id"])))


for _action in ("finalize", "cancel", "pause", "resume"):

    def _transfer_action(req, action=_action):
        req.engine.transfer_action(req.params["id"], action)
        return to_xml(types.Action(status="complete"))

    routes.add("POST", API + "/imagetransfers/{id}/" + _action)(_transfer_action)


# ----- events and jobs ----------------------------------------------------------------------


@routes.add("POST", API + "/events")
def add_event(req):
    return 201, to_xml(req.views.event(req.engine.add_external_event(read_body(req.body, types.Event))))


@routes.add("GET", API + "/events")
def list_events(req):
    events = sorted(req.engine.store["events"].values(), key=lambda ev: -int(ev["id"]))
    since = req.query_value("from")
    if since:
        events = [ev for ev in events if int(ev["id"]) > int(since)]
    events = _search(
        events,
        req.query_value("search"),
        {
            "vm.name": lambda ev: _name_of(req.engine, "vms", ev.get("vm_id")),
            "severity": lambda ev: ev["severity"],
            "type": lambda ev: ev["code"],
        },
    )
    return to_xml([req.views.event(ev) for ev in _limit(events, req)], "events")


@routes.add("GET", API + "/jobs")
def list_jobs(req):
    jobs = sorted(req.engine.store["jobs"].values(), key=lambda j: j["start_time"], reverse=True)
    return to_xml([req.views.job(j) for j in _limit(jobs, req)], "jobs")


@routes.add("GET", API + "/jobs/{id}")
def get_job(req):
    return to_xml(req.views.job(req.engine.get("jobs", req.params["id"])))


# ----- HTTP plumbing ------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each response would wait for
    # the client's delayed ACK (40 ms), which no real engine does.
    disable_nagle_algorithm = True
    server_version = "Apache"
    sys_version = ""

    def setup(self):
        super().setup()
        self.request.settimeout(300)
        self.handshake_failed = False
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.handshake_failed = True

    def handle(self):
        if self.handshake_failed:
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            pass

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/xml", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fault(self, fault: EngineFault):
        body = to_xml(types.Fault(reason=fault.reason, detail=fault.detail))
        headers = {"WWW-Authenticate": 'Bearer realm="RESTAPI"'} if fault.status == 401 else None
        self._send(fault.status, body, headers=headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        engine = self.server.engine
        if engine.faults.delay_ms:
            time.sleep(engine.faults.delay_ms / 1000)
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._body()
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/ovirt-engine/sso/oauth/token":
                return self._sso_token(body)
            if path in ("/ovirt-engine/services/sso-logout", "/ovirt-engine/sso/oauth/revoke"):
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                engine.logout(form.get("token") or query.get("token", ""))
                return self._send(200, b"{}", "application/json")
            if path == "/ovirt-engine/services/pki-resource":
                if query.get("resource") != "ca-certificate":
                    raise bad_request("Unknown PKI resource; use resource=ca-certificate")
                return self._send(200, self.server.ca_pem, "application/x-x509-ca-cert")
            if path.startswith("/ovirtsim/control"):
                self._authenticate_control()
                return self._control(path, body)
            if not path.startswith(API):
                raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")
            engine.request_count += 1
            self._authenticate()
            fn, params = routes.match(self.command if self.command != "HEAD" else "GET", path)
            req = Request(self, engine, self.server.views, params, query, body)
            result = fn(req)
            if result is None:
                return self._send(200, b"")
            status, payload = result if isinstance(result, tuple) else (200, result)
            return self._send(status, payload)
        except EngineFault as fault:
            return self._fault(fault)
        except Exception as e:  # a bug in the simulator: answer like the engine's 500
            log.exception("request %s %s failed", self.command, self.path)
            return self._fault(EngineFault(500, f"Internal error: {e}", reason="Operation Failed"))

    def _authenticate(self):
        auth = self.headers.get("Authorization", "")
        engine = self.server.engine
        if auth.startswith("Bearer ") and engine.check_token(auth[7:].strip()):
            return
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                engine.login(user, password)
                return
            except (ValueError, EngineFault):
                pass
        raise EngineFault(
            401, "Authentication is required: log in through /ovirt-engine/sso/oauth/token", reason="Unauthorized"
        )

    def _authenticate_control(self):
        # The test switches answer even while the reject_logins switch is on.
        auth = self.headers.get("Authorization", "")
        expected = base64.b64encode(f"admin@internal:{self.server.engine.password}".encode()).decode()
        if auth != f"Basic {expected}":
            raise EngineFault(401, "The control API needs the admin's basic credentials", reason="Unauthorized")

    def _sso_token(self, body: bytes):
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "password":
            return self._send(
                400,
                json.dumps(
                    {"error_code": "unsupported_grant_type", "error": "The grant type is not supported."}
                ).encode(),
                "application/json",
            )
        username = form.get("username", "")
        try:
            token = self.server.engine.login(username, form.get("password", ""))
        except EngineFault as fault:
            return self._send(
                400, json.dumps({"error_code": fault.reason, "error": fault.detail}).encode(), "application/json"
            )
        payload = {
            "access_token": token,
            "scope": form.get("scope", "ovirt-app-api"),
            "token_type": "bearer",
            "exp": str(int(time.time() * 1000) + 3600 * 1000),
        }
        return self._send(200, json.dumps(payload).encode(), "application/json")

    def _control(self, path: str, body: bytes):
        """Test-only switches, outside the engine's API: fault injection and guest writes."""
        engine = self.server.engine
        data = json.loads(body or b"{}")
        if path == "/ovirtsim/control/faults":
            for key, value in data.items():
                if not hasattr(engine.faults, key):
                    raise bad_request(f"unknown fault switch {key}")
                setattr(engine.faults, key, type(getattr(engine.faults, key))(value))
            return self._send(200, json.dumps(vars(engine.faults)).encode(), "application/json")
        if path == "/ovirtsim/control/guest-write":
            try:
                engine.guest_write(data["id"], int(data["offset"]), base64.b64decode(data["data"]))
            except qemu.QemuError as e:
                raise conflict(f"The guest could not write to the disk: {e}") from None
            return self._send(200, b"{}", "application/json")
        if path == "/ovirtsim/control/stats":
            return self._send(200, json.dumps({"requests": engine.request_count}).encode(), "application/json")
        if path == "/ovirtsim/control/settings":
            for key, value in data.items():
                engine.store.meta[key] = value
            return self._send(
                200, json.dumps(engine.store.meta.get("transfer_retention", 10)).encode(), "application/json"
            )
        raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class EngineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine, *, cert_file, key_file, ca_file):
        super().__init__(address, Handler)
        self.engine = engine
        self.views = Views(engine)
        self.ca_pem = Path(ca_file).read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        # The handshake happens in each request's thread, so a slow client cannot stall accept().
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        return thread
