from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.formats import ago
from core.pages import paginate
from jobs.forms import JobFilterForm
from jobs.models import Job, Node
from jobs.nodes import NodeError, drain, undrain


@roles.role_required(roles.VIEW)
def job_list(request):
    """Every job, filtered by status, kind, age, the policy that started it and the node it ran on
    (the dashboard links here: ?status=failed&kind=backup&since=24h&policy=3)."""
    filters = JobFilterForm(request.GET)
    valid = filters.is_valid()
    jobs = filters.filter(Job.objects.select_related("owner")) if valid else Job.objects.none()
    page, query = paginate(request, jobs)
    context = {"jobs": page.object_list, "page": page, "query": query, "filters": filters}
    # A filter that cannot be read is said on the page, never ignored.
    return render(request, "jobs/job_list.html", context, status=200 if valid else 400)


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
