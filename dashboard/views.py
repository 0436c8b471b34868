from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from core import roles
from core.audit import record_request
from core.models import AuditEvent
from core.ssh import site_key
from core.tokens import issue_token, revoke_token
from dashboard import answers
from dashboard.audit import AuditEventFilter
from dashboard.forms import ApiTokenForm, UserForm
from dashboard.proofs import proof_summary
from inventory.models import Manager
from jobs.models import Job
from policies.models import Policy

User = get_user_model()
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
    }
    return render(request, "dashboard/dashboard.html", context)


@roles.role_required(roles.ADMINISTER)
def settings_page(request):
    users = User.objects.order_by("username").prefetch_related("groups")
    rows = [(u, roles.role_of(u)) for u in users]
    return render(request, "dashboard/settings.html", {"rows": rows, "site_public_key": site_key().public_key})


@roles.role_required(roles.ADMINISTER)
@transaction.atomic  # the last-admin check (in the form) and the change, one after another across requests
def user_edit(request, pk=None):
    user = get_object_or_404(User, pk=pk) if pk else None
    form = UserForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        if user == request.user and not form.cleaned_data["is_active"]:
            form.add_error("is_active", "You cannot deactivate yourself.")
        else:
            saved = form.save()
            record_request(request, action="user_changed" if user else "user_created", target=saved)
            messages.success(request, f"User {saved.username} saved.")
            return redirect("settings")
    return render(request, "dashboard/user_form.html", {"form": form, "edited": user})


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


@roles.role_required(roles.VIEW)
def token_list(request):
    """The user's own API tokens. A new key is in this one answer only, never stored or redirected with."""
    form = ApiTokenForm(request.POST if "name" in request.POST else None)
    key = None
    if "revoke" in request.POST:
        pk = request.POST["revoke"]
        token = get_object_or_404(request.user.api_tokens, pk=pk if pk.isdigit() else None)
        revoke_token(token=token)
        record_request(request, action="token_revoked", target=token)
        messages.success(request, f"Token {token.prefix} ({token.name}) revoked.")
        return redirect("token-list")
    if form.is_bound and form.is_valid():
        token, key = issue_token(user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"])
        record_request(request, action="token_created", target=token)
        form = ApiTokenForm()
    tokens = request.user.api_tokens.all()
    return render(request, "dashboard/token_list.html", {"form": form, "key": key, "tokens": tokens})
