"""Events (the engine's, and external ones clients add) and jobs."""

import ovirtsdk4.types as types

from ovirtsim.errors import not_found
from ovirtsim.routes.listing import filter_search, limit, name_of
from ovirtsim.routes.router import router
from ovirtsim.views import API, read_body, to_xml


@router.add("POST", API + "/events")
def add_event(req):
    return 201, to_xml(req.views.event(req.engine.add_external_event(read_body(req.body, types.Event))))


@router.add("GET", API + "/events")
def list_events(req):
    events = sorted(req.engine.store["events"].values(), key=lambda ev: -int(ev["id"]))
    since = req.query_value("from")
    if since:
        events = [ev for ev in events if int(ev["id"]) > int(since)]
    search = req.query_value("search")
    if search and "=" not in search:
        # A bare word is searched in the text, as the engine does (`backup_vm.py` looks up
        # a backup's events by its id this way).
        events = [ev for ev in events if search.strip().lower() in ev["description"].lower()]
        search = None
    events = filter_search(
        events,
        search,
        {
            "vm.name": lambda ev: name_of(req.engine, "vms", ev.get("vm_id")),
            "severity": lambda ev: ev["severity"],
            "type": lambda ev: ev["code"],
        },
    )
    return to_xml([req.views.event(ev) for ev in limit(events, req)], "events")


@router.add("GET", API + "/jobs")
def list_jobs(req):
    jobs = sorted(req.engine.store["jobs"].values(), key=lambda j: j["start_time"], reverse=True)
    return to_xml([req.views.job(j) for j in limit(jobs, req)], "jobs")


@router.add("GET", API + "/jobs/{id}")
def get_job(req):
    return to_xml(req.views.job(req.engine.get("jobs", req.params["id"])))


@router.add("GET", API + "/jobs/{id}/steps")
def list_job_steps(req):
    job = req.engine.get("jobs", req.params["id"])
    return to_xml([req.views.step(job, s) for s in job.get("steps", [])], "steps")


@router.add("GET", API + "/jobs/{id}/steps/{step}")
def get_job_step(req):
    job = req.engine.get("jobs", req.params["id"])
    step = next((s for s in job.get("steps", []) if s["id"] == req.params["step"]), None)
    if step is None:
        raise not_found("steps", req.params["step"])
    return to_xml(req.views.step(job, step))
