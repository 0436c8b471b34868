"""Image transfers and their actions."""

import ovirtsdk4.types as types

from ovirtsim.routes.listing import limit
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


@router.add("GET", API + "/imagetransfers")
def list_transfers(req):
    items = sorted(req.engine.store["imagetransfers"].values(), key=lambda t: t["created"])
    return to_xml([req.views.image_transfer(t) for t in limit(items, req)], "image_transfers")


@router.add("POST", API + "/imagetransfers")
def add_transfer(req):
    transfer = req.engine.add_transfer(read_body(req.body, types.ImageTransfer))
    return 201, to_xml(req.views.image_transfer(transfer))


@router.add("GET", API + "/imagetransfers/{id}")
def get_transfer(req):
    return to_xml(req.views.image_transfer(req.engine.get("imagetransfers", req.params["id"])))


for _action in ("finalize", "cancel", "pause", "resume"):

    def _transfer_action(req, action=_action):
        req.engine.transfer_action(req.params["id"], action)
        return to_xml(types.Action(status="complete"))

    router.add("POST", API + "/imagetransfers/{id}/" + _action)(_transfer_action)
