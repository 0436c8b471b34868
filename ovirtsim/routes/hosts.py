"""Hosts, their statistics and their NIC."""

from ovirtsim.routes.listing import empty_route, name_of, read_routes
from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


def host_search_attributes(engine) -> dict:
    return {
        "name": lambda h: h["name"],
        "id": lambda h: h["id"],
        "status": lambda h: h["status"],
        "address": lambda h: h["address"],
        "cluster": lambda h: name_of(engine, "clusters", h["cluster_id"]),
        "datacenter": lambda h: name_of(
            engine, "datacenters", (engine.store["clusters"].get(h["cluster_id"]) or {}).get("dc_id")
        ),
    }


read_routes("hosts", "hosts", "host", host_search_attributes)


@router.add("GET", API + "/hosts/{id}/statistics")
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


@router.add("GET", API + "/hosts/{id}/nics")
def list_host_nics(req):
    return to_xml([req.views.host_nic(req.engine.get("hosts", req.params["id"]))], "host_nics")


# Host tags: none here.
empty_route("hosts", "tags")
