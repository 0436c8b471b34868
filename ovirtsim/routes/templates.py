"""The Blank template, the only one here."""

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import filter_search, limit, split_page
from ovirtsim.routes.router import router
from ovirtsim.views import API, ZERO_UUID, to_xml


@router.add("GET", API + "/templates")
def list_templates(req):
    search, page = split_page(req.query_value("search"))
    blank = {"id": ZERO_UUID, "name": "Blank"}
    items = filter_search([blank], search, {"name": lambda t: t["name"], "id": lambda t: t["id"]})
    return to_xml([req.views.blank_template() for _ in limit(items, req, page)], "templates")


@router.add("GET", API + "/templates/{id}")
def get_template(req):
    if req.params["id"] != ZERO_UUID:
        raise not_found("templates", req.params["id"])
    return to_xml(req.views.blank_template())
