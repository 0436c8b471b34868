"""The saved OVF of a backup point, read with suspicion before any engine is handed it.

An engine's OVF is plain XML without a document type declaration. A DOCTYPE is what external
entities (which make the parser read files or URLs) and nested entity expansions ("billion
laughs", which exhaust memory) need, so one is refused outright, whatever it declares: that
leaves nothing for the parser that reads it later (ours or the engine's) to resolve or expand.
Python's expat stops at the declaration here, before it reads any entity (defusedxml is not a
dependency, and would do the same with more code).
"""

from xml.parsers import expat

MAX_BYTES = 16 * 1024 * 1024  # an engine's OVF is tens of KiB; anything near this is not one


class _Declared(Exception):
    pass


def _refuse(*_args) -> None:
    raise _Declared


def ovf_problem(data: bytes) -> str:
    """What makes these bytes unfit to hand to an engine as an OVF, in words ("" when nothing)."""
    if len(data) > MAX_BYTES:
        return f"is {len(data)} bytes, far more than any engine's OVF."
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    try:
        parser.Parse(data, True)
    except _Declared:
        return (
            "declares a document type (DOCTYPE), which no engine's OVF has: the entities declared there "
            "could make the engine read its own files or exhaust its memory."
        )
    except expat.ExpatError as e:
        return f"is not well-formed XML ({e})."
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text, as every engine's OVF is."
    return ""


OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1/"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"


def without_disks(ovf: str, keep: set[str]) -> str:
    """The OVF with only the disks whose ids are in `keep`: the others' file references, disk entries
    and hardware items are left out. A point's OVF is the VM's whole configuration, excluded disks
    too; handed to an engine as it is, those would be looked for (and refused when another VM has
    them). Only for an OVF `ovf_problem` accepted (no DOCTYPE: nothing for the parser to expand).
    Returned unchanged when every disk is kept."""
    import io
    import xml.etree.ElementTree as ET

    namespaces = dict(ev[1] for ev in ET.iterparse(io.StringIO(ovf), events=("start-ns",)))
    ovf_ns, rasd_ns = namespaces.get("ovf", OVF_NS), namespaces.get("rasd", RASD_NS)
    root = ET.fromstring(ovf)

    def disk_of(element) -> str | None:
        ref = element.get(f"{{{ovf_ns}}}href") or element.get(f"{{{ovf_ns}}}fileRef")
        if ref is None and element.findtext(f"{{{rasd_ns}}}ResourceType") == "17":
            ref = element.findtext(f"{{{rasd_ns}}}HostResource")
        return ref.split("/", 1)[0] if ref else None

    dropped = False
    for parent in list(root.iter()):
        for child in list(parent):
            disk = disk_of(child)
            if disk is not None and disk not in keep:
                parent.remove(child)
                dropped = True
    if not dropped:
        return ovf
    for prefix, uri in namespaces.items():
        if prefix:
            ET.register_namespace(prefix, uri)  # the engine reads the OVF's own prefixes
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def disk_volumes(ovf: str) -> dict[str, str]:
    """disk id -> the volume id the OVF's file references name for it (`ovf:href="DISK/VOLUME"`): the
    file an export domain holds for that disk. Only for an OVF `ovf_problem` accepted."""
    import io
    import xml.etree.ElementTree as ET

    namespaces = dict(ev[1] for ev in ET.iterparse(io.StringIO(ovf), events=("start-ns",)))
    ovf_ns = namespaces.get("ovf", OVF_NS)
    found = {}
    for element in ET.fromstring(ovf).iter():
        href = element.get(f"{{{ovf_ns}}}href")
        if href and href.count("/") == 1:
            disk, volume = href.split("/")
            found[disk] = volume
    return found
