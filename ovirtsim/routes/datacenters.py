"""Data centers, and the clusters and storage domains in each."""

from ovirtsim.routes.clusters import cluster_search_attributes
from ovirtsim.routes.listing import list_collection, read_routes
from ovirtsim.routes.router import router
from ovirtsim.routes.storage_domains import sd_search_attributes
from ovirtsim.views import API, to_xml


def dc_search_attributes(engine) -> dict:
    return {"name": lambda d: d["name"], "id": lambda d: d["id"], "status": lambda d: "up"}


read_routes("datacenters", "data_centers", "data_center", dc_search_attributes)


@router.add("GET", API + "/datacenters/{id}/clusters")
def list_datacenter_clusters(req):
    req.engine.get("datacenters", req.params["id"])
    items = list_collection(
        req, "clusters", cluster_search_attributes(req.engine), where=lambda c: c["dc_id"] == req.params["id"]
    )
    return to_xml([req.views.cluster(c) for c in items], "clusters")


@router.add("GET", API + "/datacenters/{id}/storagedomains")
def list_datacenter_storagedomains(req):
    req.engine.get("datacenters", req.params["id"])
    items = list_collection(
        req, "storagedomains", sd_search_attributes(req.engine), where=lambda s: s.get("dc_id") == req.params["id"]
    )
    return to_xml([req.views.storage_domain(s) for s in items], "storage_domains")
