"""The REST API v4 (`/ovirt-engine/api/...`), one module per collection.

router.py            Router, the `router` every module registers on, and Request
listing.py           search, paging, `max`; the list and get routes of top-level collections
root.py              the API root
datacenters.py, clusters.py, hosts.py, storage_domains.py, networks.py, templates.py
disks.py, disk_snapshots.py, vms.py, disk_attachments.py, snapshots.py, tags.py
transfers.py         image transfers
backups.py           VM backups and checkpoints
export_domains.py    VM export, export domains' VMs and templates, their removal and import
imported_domains.py  an imported data domain's unregistered VMs and disks, registering a VM, removing a domain
events.py            events and jobs
permissions.py       users, roles and permits, objects' permissions, and the permit each action needs

Importing this package registers every route: each module below adds its own on import.
"""

from ovirtsim.routes import (  # noqa: F401  (imported to register their routes)
    backups,
    clusters,
    datacenters,
    disk_attachments,
    disk_snapshots,
    disks,
    events,
    export_domains,
    hosts,
    imported_domains,
    networks,
    permissions,
    root,
    snapshots,
    storage_domains,
    tags,
    templates,
    transfers,
    vms,
)
from ovirtsim.routes.router import Request, Router, router

__all__ = ["Request", "Router", "router"]
