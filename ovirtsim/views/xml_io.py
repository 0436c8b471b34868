"""The engine's XML, written and read with the SDK's own writers and readers.

Whatever the real SDK can read it reads here. The writers emit no `<link rel=...>` elements,
so `add_links` adds the ones the engine has, which `follow_link` and inlined lists
(`follow=`) rely on.
"""

import xml.etree.ElementTree as ET

import ovirtsdk4.readers
import ovirtsdk4.writers  # noqa: F401  (registers the writers)
from ovirtsdk4.reader import Reader
from ovirtsdk4.writer import Writer

from ovirtsim.errors import bad_request

# Sub-collections each entity links to: element tag -> [rel], each linked at the entity's href + "/" + rel.
LINKS = {
    "vm": [
        "diskattachments",
        "snapshots",
        "nics",
        "tags",
        "permissions",
        "statistics",
        "reporteddevices",
        "backups",
        "checkpoints",
    ],
    "backup": ["disks"],
    "checkpoint": ["disks"],
    "snapshot": ["disks"],
    "storage_domain": ["disks", "disksnapshots", "vms", "templates", "permissions"],
    "data_center": ["clusters", "storagedomains", "networks", "permissions"],
    "cluster": ["networks", "permissions"],
    "host": ["nics", "tags", "permissions", "statistics"],
    "disk": ["disksnapshots", "permissions", "statistics"],
    "job": ["steps"],
}

# The element an inlined (followed) sub-collection appears as.
INLINE_TAG = {
    "diskattachments": "disk_attachments",
    "disksnapshots": "disk_snapshots",
    "storagedomains": "storage_domains",
}


def to_xml(obj, root: str | None = None) -> bytes:
    text = Writer.write(obj, root=root)
    return add_links(text)


def add_links(text: str) -> bytes:
    tree = ET.fromstring(text)
    for el in tree.iter():
        rels = LINKS.get(el.tag)
        base = el.get("href")
        if not rels or not base or len(el) == 0:
            continue
        present = {child.tag for child in el}
        for rel in rels:
            if INLINE_TAG.get(rel, rel) in present:
                continue
            ET.SubElement(el, "link", {"href": f"{base}/{rel}", "rel": rel})
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(tree, encoding="utf-8")


def read_body(body: bytes, expected: type):
    if not body.strip():
        raise bad_request(f"The request body must be a {expected.__name__} XML document.")
    try:
        obj = Reader.read(body)
    except Exception as e:
        raise bad_request(f"Failed to parse the request body: {e}") from None
    if not isinstance(obj, expected):
        raise bad_request(f"The request body is a {type(obj).__name__}, expected {expected.__name__}.")
    return obj
