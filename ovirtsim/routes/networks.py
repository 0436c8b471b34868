"""The management network (ovirtmgmt) of each data center, as the engine and its clusters list it."""

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import filter_search, limit, split_page
from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


@router.add("GET", API + "/datacenters/{id}/networks")
def list_datacenter_networks(req):
    dc = req.engine.get("datacenters", req.params["id"])
    return to_xml([req.views.management_network(dc["id"], under="networks")], "networks")


@router.add("GET", API + "/networks")
def list_networks(req):
    search, page = split_page(req.query_value("search"))
    nets = [req.views.management_network(dc["id"], under="networks") for dc in req.engine.store["datacenters"].values()]
    found = filter_search(nets, search, {"name": lambda n: n.name, "id": lambda n: n.id})
    return to_xml(limit(found, req, page), "networks")


@router.add("GET", API + "/networks/{id}")
def get_network(req):
    for dc in req.engine.store["datacenters"].values():
        network = req.views.management_network(dc["id"], under="networks")
        if network.id == req.params["id"]:
            return to_xml(network)
    raise not_found("networks", req.params["id"])


@router.add("GET", API + "/clusters/{id}/networks")
def list_cluster_networks(req):
    cluster = req.engine.get("clusters", req.params["id"])
    network = req.views.management_network(cluster["dc_id"], under=f"clusters/{cluster['id']}/networks")
    return to_xml([network], "networks")
