"""Hosts and their NIC."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href, ref

# What a host that predates per-host versions in the state reports.
HOST_VERSIONS = {"vdsm": "4.50.5.1-1.el9", "libvirt": "9.0.0-10.el9"}


def package_version(package: str, rpm_version: str | None) -> types.Version | None:
    """A package's version as the engine maps it (HostMapper, from vdsm's RpmVersion): the numbers
    of its version, up to four (major, minor, build, revision), and `full_version` the RPM name
    ("vdsm-4.50.5.1-1.el9")."""
    if not rpm_version:
        return None
    version = rpm_version.split("-")[0]
    numbers = [int(n) for n in version.split(".") if n.isdigit()][:4]
    numbers += [0] * (4 - len(numbers))
    major, minor, build_, revision = numbers
    return build(
        types.Version,
        major=major,
        minor=minor,
        build=build_,
        revision=revision,
        full_version=f"{package}-{rpm_version}",
    )


class HostViews(ViewsCore):
    def host(self, host: dict, follow: dict | None = None) -> types.Host:
        follow = follow or {}
        check_follow(follow, {"cluster"}, "Host")
        versions = {**HOST_VERSIONS, **host.get("versions", {})}
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
            version=package_version("vdsm", versions.get("vdsm")),
            spm=build(types.Spm, status=types.SpmStatus.SPM if host.get("spm") else types.SpmStatus.NONE),
            libvirt_version=package_version("libvirt", versions.get("libvirt")),
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
