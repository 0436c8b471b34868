"""How collections are listed: the engine's search, paging and `max`, and the routes every
top-level collection has (list and get)."""

import fnmatch
import re

from ovirtsim.errors import bad_request
from ovirtsim.routes.router import Request, router
from ovirtsim.views import API, to_xml

SEARCH_TERM = re.compile(r"^\s*([\w.]+)\s*(!=|=)\s*(.+?)\s*$")
ENUM_SEARCH_KEYS = {"status", "type", "format", "severity"}
DEFAULT_PAGE_SIZE = 100


def filter_search(
    items: list[dict], search: str | None, attributes: dict, *, case_sensitive: bool = True
) -> list[dict]:
    """The engine's search: `key=value` terms joined by `and`, `*` wildcards, `!=`. Text is
    compared with its case unless the client passed case_sensitive=false (the engine's default
    is true); enumerated values (status, type, format...) match in any case, as there."""
    if not search:
        return items
    terms = []
    for raw in re.split(r"\s+and\s+", search.strip(), flags=re.IGNORECASE):
        m = SEARCH_TERM.match(raw)
        if not m:
            raise bad_request(f"Cannot parse search query '{search}'")
        key, op, value = m.group(1).lower(), m.group(2), m.group(3).strip().strip('"').strip("'")
        if key not in attributes:
            raise bad_request(f"Unknown search attribute '{key}' in query '{search}'")
        fold = not case_sensitive or key in ENUM_SEARCH_KEYS
        terms.append((attributes[key], op, value.lower() if fold else value, fold))

    def matches(item):
        for getter, op, pattern, fold in terms:
            values = getter(item)
            values = values if isinstance(values, (list, set, tuple)) else [values]
            hit = any(
                v is not None and fnmatch.fnmatchcase(str(v).lower() if fold else str(v), pattern) for v in values
            )
            if hit != (op == "="):
                return False
        return True

    return [item for item in items if matches(item)]


def split_page(search: str | None) -> tuple[str | None, int]:
    """Split the engine's paging suffix off a search: "name=a* page 2" -> ("name=a*", 2)."""
    m = re.search(r"(?:^|\s)page\s+(\d+)\s*$", search or "", flags=re.IGNORECASE)
    if not m:
        return search, 1
    page = int(m.group(1))
    if page < 1:
        raise bad_request(f"Cannot parse search query '{search}': pages are numbered from 1")
    return search[: m.start()].strip() or None, page


def limit(items: list, req: Request, page: int = 1) -> list:
    """`max` items of page `page` (the engine's page size is `max`, else its default of 100)."""
    m = req.query_value("max")
    try:
        size = int(m) if m is not None else None
    except ValueError:
        raise bad_request(f"Value '{m}' of parameter 'max' is not a valid integer") from None
    if size is not None and size < 0:
        size = None
    if page > 1:
        start = (page - 1) * (size if size is not None else DEFAULT_PAGE_SIZE)
        items = items[start:]
    return items[:size] if size is not None else items


def name_of(engine, collection, ident):
    item = engine.store[collection].get(ident) if ident else None
    return item["name"] if item else None


def list_collection(req: Request, collection: str, attributes: dict, where=None) -> list[dict]:
    """A collection as a list call returns it: `where` (a sub-collection's own items), then the
    search, then the page and `max`."""
    items = sorted(req.engine.store[collection].values(), key=lambda x: x.get("name", x["id"]))
    if where is not None:
        items = [x for x in items if where(x)]
    search, page = split_page(req.query_value("search"))
    case_sensitive = (req.query_value("case_sensitive") or "true").lower() != "false"
    return limit(filter_search(items, search, attributes, case_sensitive=case_sensitive), req, page)


def read_routes(collection: str, root: str, view: str, attributes) -> None:
    """List (search, page, max, follow) and get of a top-level collection, as the engine serves them."""

    @router.add("GET", API + f"/{collection}")
    def list_all(req):
        items = list_collection(req, collection, attributes(req.engine))
        return to_xml([getattr(req.views, view)(item, req.follow) for item in items], root)

    @router.add("GET", API + f"/{collection}/{{id}}")
    def get_one(req):
        return to_xml(getattr(req.views, view)(req.engine.get(collection, req.params["id"]), req.follow))


def empty_route(kind: str, sub: str):
    """A sub-collection an entity links to that is always empty here."""

    @router.add("GET", API + f"/{kind}/{{id}}/{sub}")
    def list_nothing(req):
        req.engine.get(kind, req.params["id"])
        return to_xml([], sub)
