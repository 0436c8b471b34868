"""Data centers, their clusters and their management network."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href, ref


class DataCenterViews(ViewsCore):
    def data_center(self, dc: dict, follow: dict | None = None) -> types.DataCenter:
        follow = follow or {}
        check_follow(follow, {"clusters", "storage_domains"}, "DataCenter")
        obj = build(
            types.DataCenter,
            id=dc["id"],
            href=href("datacenters", dc["id"]),
            name=dc["name"],
            description=dc.get("description", ""),
            status=types.DataCenterStatus.UP,
            local=False,
            storage_format=types.StorageFormat.V5,
            version=self.version(),
            supported_versions=[self.version()],
        )
        if "clusters" in follow:
            obj.clusters = [
                self.cluster(c, follow["clusters"]) for c in self.store["clusters"].values() if c["dc_id"] == dc["id"]
            ]
        if "storage_domains" in follow:
            obj.storage_domains = [
                self.storage_domain(sd, follow["storage_domains"])
                for sd in self.store["storagedomains"].values()
                if sd["dc_id"] == dc["id"]
            ]
        return obj

    def cluster(self, cluster: dict, follow: dict | None = None) -> types.Cluster:
        follow = follow or {}
        check_follow(follow, {"data_center"}, "Cluster")
        return build(
            types.Cluster,
            id=cluster["id"],
            href=href("clusters", cluster["id"]),
            name=cluster["name"],
            description=cluster.get("description", ""),
            cpu=build(
                types.Cpu,
                type=cluster.get("cpu_type", "Intel Cascadelake Server Family"),
                architecture=types.Architecture.X86_64,
            ),
            version=self.version(),
            data_center=self._linked(follow, "data_center", "datacenters", cluster["dc_id"]),
        )

    def management_network(self, dc_id: str, *, under: str) -> types.Network:
        ident = dc_id[:-12] + "00000000e7e7"
        return build(
            types.Network,
            id=ident,
            href=href(under, ident),
            name="ovirtmgmt",
            description="Management Network",
            mtu=0,
            stp=False,
            usages=[types.NetworkUsage.VM, types.NetworkUsage.MANAGEMENT],
            data_center=ref(types.DataCenter, "datacenters", dc_id),
        )
