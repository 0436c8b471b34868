"""The API root: product info and summary."""

from ovirtsim.routes.router import router
from ovirtsim.views import API, to_xml


@router.add("GET", API)
def api_root(req):
    return to_xml(req.views.api(req.engine.user_by_login(req.user)))
