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
