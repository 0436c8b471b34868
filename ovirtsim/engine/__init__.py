"""What the simulated engine does, collection by collection, over one shared store.

core.py               EngineCore: the store, life cycle, worker threads, lookups; ids, Faults
sessions.py           SSO logins and tokens
events.py             events and jobs (and their steps)
storage_domains.py    storage domain usage
disks.py              disks, their volume chain
guest_io.py           the guest's writes: bytes at an offset, a file of a filesystem
disk_attachments.py   a VM's disk attachments
vms.py                VMs, power actions, OVF
tags.py               tags and VM tags
snapshots.py          snapshots and disk snapshots
transfers.py          image transfers and their monitor
backups.py            VM backups and checkpoints (dirty bitmaps)
export_domains.py     export storage domains: VM export, what they hold, removal
export_imports.py     a VM imported from an export domain
imported_domains.py   an NFS data domain imported, its VMs registered (before ExportDomains: it
                      takes the attach/detach of the data domains it imported)
vm_clones.py          a VM cloned from a snapshot
disk_moves.py         a disk moved to another storage domain, cold or live (storage migration)

`Engine` combines them: one object the server, the views and the seeds call.
"""

from ovirtsim.engine.backups import Backups
from ovirtsim.engine.core import (
    DEFAULT_STORAGE_CAPACITY,
    FINAL_PHASES,
    EngineCore,
    Faults,
    GiB,
    MiB,
    new_id,
    now_iso,
)
from ovirtsim.engine.disk_attachments import DiskAttachments
from ovirtsim.engine.disk_moves import DiskMoves
from ovirtsim.engine.disks import Disks
from ovirtsim.engine.events import Events
from ovirtsim.engine.export_domains import ExportDomains
from ovirtsim.engine.export_imports import ExportImports
from ovirtsim.engine.guest_io import GuestIo
from ovirtsim.engine.imported_domains import ImportedDomains
from ovirtsim.engine.sessions import Sessions
from ovirtsim.engine.snapshots import Snapshots
from ovirtsim.engine.storage_domains import StorageDomains
from ovirtsim.engine.tags import Tags
from ovirtsim.engine.transfers import ImageTransfers
from ovirtsim.engine.vm_clones import VmClones
from ovirtsim.engine.vms import Vms


class Engine(
    Sessions,
    Events,
    StorageDomains,
    Disks,
    GuestIo,
    DiskAttachments,
    Vms,
    Tags,
    Snapshots,
    ImageTransfers,
    Backups,
    ImportedDomains,
    ExportDomains,
    ExportImports,
    VmClones,
    DiskMoves,
):
    """The simulated engine: every collection's behaviour over one store (see EngineCore)."""


__all__ = [
    "DEFAULT_STORAGE_CAPACITY",
    "FINAL_PHASES",
    "Engine",
    "EngineCore",
    "Faults",
    "GiB",
    "MiB",
    "new_id",
    "now_iso",
]
