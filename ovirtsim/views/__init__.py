"""The engine's state as `ovirtsdk4.types` objects, written as the engine's XML.

xml_io.py            writing (with the engine's <link> elements) and reading XML
base.py              URLs, SDK object builders, `follow`, ViewsCore (the engine, its store)
system.py            the API root, the Blank template, permissions, statistics
datacenters.py       data centers, clusters, the management network
hosts.py             hosts and their NIC
storage_domains.py   storage domains
disks.py             disks, disk attachments, disk snapshots
vms.py               VMs, NICs, reported devices
snapshots.py         snapshots and their disks
tags.py, transfers.py, events.py   tags; image transfers; events and jobs
backups.py           VM backups and checkpoints
export_domains.py    what an export storage domain holds (VMs, templates, their disks)

`Views` combines them: `views.vm(vm_dict, follow)` and the like, one method per entity type.
"""

from ovirtsim.views.backups import BackupViews
from ovirtsim.views.base import API, ZERO_UUID, ViewsCore, href, parse_follow
from ovirtsim.views.datacenters import DataCenterViews
from ovirtsim.views.disks import DiskViews
from ovirtsim.views.events import EventViews
from ovirtsim.views.export_domains import ExportDomainViews
from ovirtsim.views.hosts import HostViews
from ovirtsim.views.snapshots import SnapshotViews
from ovirtsim.views.storage_domains import StorageDomainViews
from ovirtsim.views.system import SystemViews
from ovirtsim.views.tags import TagViews
from ovirtsim.views.transfers import TransferViews
from ovirtsim.views.vms import VmViews
from ovirtsim.views.xml_io import add_links, read_body, to_xml


class Views(
    SystemViews,
    DataCenterViews,
    HostViews,
    StorageDomainViews,
    DiskViews,
    VmViews,
    SnapshotViews,
    TagViews,
    TransferViews,
    EventViews,
    BackupViews,
    ExportDomainViews,
):
    """Builds SDK types for the engine's entities; `follow` inlines linked entities."""


__all__ = ["API", "ZERO_UUID", "Views", "ViewsCore", "add_links", "href", "parse_follow", "read_body", "to_xml"]
