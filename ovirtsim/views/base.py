"""What every view uses: the API's URLs, SDK object builders, `follow`, and ViewsCore."""

import datetime

import ovirtsdk4.types as types

from ovirtsim.errors import bad_request

API = "/ovirt-engine/api"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

# Collection -> (view method, SDK type) of entities other entities link to.
LINKED = {
    "datacenters": ("data_center", types.DataCenter),
    "clusters": ("cluster", types.Cluster),
    "hosts": ("host", types.Host),
    "storagedomains": ("storage_domain", types.StorageDomain),
    "disks": ("disk", types.Disk),
    "vms": ("vm", types.Vm),
}


def build(cls, *args, href: str | None = None, **kwargs):
    """Build an SDK type; `href` is an attribute the constructors do not take."""
    obj = cls(*args, **kwargs)
    if href is not None:
        obj.href = href
    return obj


def timestamp(value: str | None):
    return datetime.datetime.fromisoformat(value) if value else None


def href(*parts: str) -> str:
    return "/".join([API, *parts])


def parse_follow(follow: str | None) -> dict:
    """'disk_attachments.disk,nics' -> {'disk_attachments': {'disk': {}}, 'nics': {}}"""
    tree: dict = {}
    for path in (follow or "").split(","):
        path = path.strip()
        if not path:
            continue
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def check_follow(follow: dict, allowed: set[str], entity: str) -> None:
    for name in follow:
        if name not in allowed:
            raise bad_request(f"Link '{name}' isn't valid for entity of type '{entity}'.")


def ref(cls, collection: str, ident: str | None):
    return build(cls, id=ident, href=href(collection, ident)) if ident else None


class ViewsCore:
    """What every collection's views share: the engine, its store, and linked entities.

    Each collection's views live in their own module as a subclass of ViewsCore;
    `ovirtsim.views.Views` combines them.
    """

    def __init__(self, engine):
        self.engine = engine

    @property
    def store(self):
        return self.engine.store

    def _linked(self, follow: dict, name: str, collection: str, ident: str | None):
        """A linked entity: inlined when the client follows `name` (and deeper, as it asked),
        otherwise a reference with its id and href."""
        view, cls = LINKED[collection]
        item = self.store[collection].get(ident) if ident else None
        if item is None:
            return ref(cls, collection, ident)
        return getattr(self, view)(item, follow[name]) if name in follow else ref(cls, collection, ident)
