from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.pages import paginate
from jobs.models import Job


@roles.role_required(roles.VIEW)
def job_list(request):
    jobs = Job.objects.select_related("owner")
    status = request.GET.get("status")
    if status:
        jobs = jobs.filter(status=status)
    page, query = paginate(request, jobs)
    context = {"jobs": page.object_list, "page": page, "query": query, "status": status, "statuses": Job.Status}
    return render(request, "jobs/job_list.html", context)


@roles.role_required(roles.VIEW)
def job_detail(request, pk):
    job = get_object_or_404(Job.objects.select_related("owner", "run__policy"), pk=pk)
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
