"""Clusters."""

from ovirtsim.routes.listing import name_of, read_routes


def cluster_search_attributes(engine) -> dict:
    return {
        "name": lambda c: c["name"],
        "id": lambda c: c["id"],
        "datacenter": lambda c: name_of(engine, "datacenters", c["dc_id"]),
    }


read_routes("clusters", "clusters", "cluster", cluster_search_attributes)
