from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import render
from django.utils import timezone

from alerts.change_rate import flagged_vms
from core import roles
from core.models import AuditEvent
from dashboard import answers
from dashboard.audit import AuditEventFilter
from dashboard.proofs import proof_summary
from inventory.models import Manager
from jobs.models import Job
from policies.models import Policy

AUDIT_PAGE_SIZE = 50


@roles.role_required(roles.VIEW)
def dashboard(request):
    """The morning questions, each answer a link to the list behind it (dashboard.answers)."""
    now = timezone.now()
    policies = list(Policy.objects.order_by("priority", "name"))
    protection = answers.protection(now=now)
    storage = answers.storage(now=now)
    job_counts = dict(Job.objects.active().values_list("status").annotate(n=Count("pk")).order_by())
    context = {
        "protection": protection,
        "last_day": answers.last_day(now=now, policies=policies),
        "job_charts": answers.job_charts(now=now),
        "storage": storage,
        "damaged": sum(d.damaged for d in storage),
        "next_runs": answers.next_runs(now=now, policies=policies, covered=protection["by_policy"]),
        "managers": Manager.objects.count(),
        "jobs_running": job_counts.get(Job.Status.RUNNING, 0),
        "jobs_queued": job_counts.get(Job.Status.QUEUED, 0),
        "proofs": proof_summary(),
        "unusual_change": flagged_vms(),
    }
    return render(request, "dashboard/dashboard.html", context)


@roles.role_required(roles.ADMINISTER)
def audit_log(request):
    """Who did what and when, newest first, filtered as the API filters it."""
    events = AuditEventFilter(request.GET or None, queryset=AuditEvent.objects.order_by("-time", "-pk"))
    page = Paginator(events.qs, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/audit_log.html",
        {"filter": events, "page": page, "query": query.urlencode(), "sources": AuditEvent.Source.choices},
    )
