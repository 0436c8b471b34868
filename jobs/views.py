from datetime import timedelta

from django.contrib import messages
from django.contrib.contenttypes.models import ContentType
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.formats import ago
from core.pages import paginate
from jobs.kinds import kind_label
from jobs.models import Job, Node
from jobs.nodes import NodeError, drain, undrain

SINCE = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@roles.role_required(roles.VIEW)
def job_list(request):
    jobs = Job.objects.select_related("owner")
    status = request.GET.get("status")
    if status:
        jobs = jobs.filter(status=status)
    node = request.GET.get("node")
    if node:
        jobs = jobs.filter(node=node)
    jobs = _filter_more(jobs, request.GET)
    page, query = paginate(request, jobs)
    context = {
        "jobs": page.object_list,
        "page": page,
        "query": query,
        "status": status,
        "statuses": Job.Status,
        "node": node,
        "narrowed": _narrowed(request.GET),
    }
    return render(request, "jobs/job_list.html", context)


def _filter_more(jobs, params):
    """The dashboard's answers link here: ?kind=backup, ?since=24h|7d|30d (queued since),
    ?policy=<id> (started by that policy: a generic reference, named by its app and model)."""
    if params.get("kind"):
        jobs = jobs.filter(kind=params["kind"])
    if params.get("since") in SINCE:
        jobs = jobs.filter(created__gte=timezone.now() - SINCE[params["since"]])
    if params.get("policy", "").isdigit():
        jobs = jobs.filter(
            started_by_type__app_label="policies", started_by_type__model="policy", started_by_id=params["policy"]
        )
    return jobs


def _narrowed(params) -> str:
    """The filters of _filter_more in words ("backup jobs, queued in the last 24 h, of policy nightly")."""
    words = []
    if params.get("kind"):
        words.append(f"{kind_label(params['kind'])} jobs")
    if params.get("since") in SINCE:
        words.append(f"queued in the last {params['since'].replace('h', ' hours').replace('d', ' days')}")
    if params.get("policy", "").isdigit():
        policy_type = ContentType.objects.get_by_natural_key("policies", "policy")
        found = policy_type.model_class().objects.filter(pk=params["policy"]).first()
        words.append(f"started by policy {found or '#' + params['policy']}")
    return ", ".join(words)


@roles.role_required(roles.VIEW)
def job_detail(request, pk):
    job = get_object_or_404(Job.objects.select_related("owner", "started_by_type"), pk=pk)
    template = "jobs/job_progress.html" if request.headers.get("HX-Request") else "jobs/job_detail.html"
    return render(request, template, {"job": job, "events": job.events.visible_to(request.user)[:500]})


@require_POST
@roles.role_required(roles.OPERATE)
def job_cancel(request, pk):
    job = get_object_or_404(Job, pk=pk)
    if job.is_final:
        messages.info(request, f"Job {job.pk} has already {job.status}.")
    else:
        job.request_cancel()
        job.log("warning", f"Cancel requested by {request.user.username}")
        record_request(request, action="job_cancelled", target=job)
        messages.warning(request, f"Cancel requested for job {job.pk}; it stops at its next step and cleans up.")
    return redirect("job-detail", job.pk)


@roles.role_required(roles.VIEW)
def node_list(request):
    nodes = Node.objects.all()
    running = Node.objects.load([n.name for n in nodes])
    rows = [(node, running.get(node.name, 0), ago(node.heartbeat)) for node in nodes]
    return render(
        request, "jobs/node_list.html", {"rows": rows, "can_drain": roles.can(request.user, roles.ADMINISTER)}
    )


@require_POST
@roles.role_required(roles.ADMINISTER)
def node_drain(request, name):
    undo = request.POST.get("undo") == "1"
    try:
        node = undrain(name) if undo else drain(name, by=request.user.username)
    except NodeError as e:
        messages.error(request, str(e))
        return redirect("node-list")
    record_request(request, action="node_undrained" if undo else "node_drained", target=node)
    if undo:
        messages.success(request, f"Node {node.name} takes new jobs again.")
    else:
        messages.warning(
            request, f"Node {node.name} is draining: it finishes its running jobs and is sent no new ones."
        )
    return redirect("node-list")
