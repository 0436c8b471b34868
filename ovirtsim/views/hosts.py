"""Hosts and their NIC."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href, ref


class HostViews(ViewsCore):
    def host(self, host: dict, follow: dict | None = None) -> types.Host:
        follow = follow or {}
        check_follow(follow, {"cluster"}, "Host")
        return build(
            types.Host,
            id=host["id"],
            href=href("hosts", host["id"]),
            name=host["name"],
            address=host["address"],
            status=build(types.HostStatus, host["status"]),
            type=types.HostType.RHEL,
            cluster=self._linked(follow, "cluster", "clusters", host["cluster_id"]),
            ssh=build(
                types.Ssh,
                port=host.get("ssh_port", 22),
                fingerprint=host.get("ssh_fingerprint"),
                public_key=host.get("ssh_public_key"),
            ),
            version=build(types.Version, major=4, minor=5, build=5, revision=0, full_version="vdsm-4.50.5"),
            spm=build(types.Spm, status=types.SpmStatus.SPM if host.get("spm") else types.SpmStatus.NONE),
            libvirt_version=build(types.Version, full_version="libvirt-9.0.0"),
        )

    def host_nic(self, host: dict) -> types.HostNic:
        ident = host["id"][:-12] + "0000000000e0"
        return build(
            types.HostNic,
            id=ident,
            href=href("hosts", host["id"], "nics", ident),
            name="eth0",
            boot_protocol=types.BootProtocol.DHCP,
            status=types.NicStatus.UP,
            speed=10_000_000_000,
            mtu=1500,
            host=ref(types.Host, "hosts", host["id"]),
        )
