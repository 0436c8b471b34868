from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from core import roles
from core.audit import record_request
from core.models import AuditEvent
from core.pages import paginate
from core.ssh import site_key
from core.tokens import issue_token, revoke_token
from dashboard import answers
from dashboard.audit import AuditEventFilter
from dashboard.forms import ApiTokenForm, UserForm
from dashboard.proofs import proof_summary
from inventory.models import VM, Cluster, DataCenter, Manager, Tag
from inventory.validators import is_uuid
from jobs.models import Job
from policies import rpo
from policies.coverage import coverage_of, with_backup_summary
from policies.models import Policy
from recovery.instant_views import last_proof, proof_running, with_actions
from repository.models import BackupPoint
from strategies.registry import strategy_options

User = get_user_model()
AUDIT_PAGE_SIZE = 50
INSTANTS_SHOWN = 10  # on a VM's page, the newest; /instant/ lists them all


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


@roles.role_required(roles.VIEW)
def vm_list(request):
    vms = with_backup_summary(VM.objects.all()).select_related("cluster", "manager").prefetch_related("tags")
    f = {
        key: request.GET.get(key, "").strip()
        for key in ("q", "cluster", "datacenter", "tag", "protected", "last_backup", "missing", "rpo")
    }
    if f["q"]:
        match = Q(name__icontains=f["q"])
        if is_uuid(f["q"]):
            match |= Q(engine_id=f["q"])
        vms = vms.filter(match)
    if f["cluster"]:
        vms = vms.filter(cluster_id=f["cluster"])
    if f["datacenter"]:
        vms = vms.filter(cluster__data_center_id=f["datacenter"])
    if f["tag"]:
        vms = vms.filter(tags__name=f["tag"])
    if f["protected"] in ("yes", "no"):
        vms = vms.filter(protected=f["protected"] == "yes")
    if f["last_backup"] == "never":
        vms = vms.filter(last_backup_status=None)
    elif f["last_backup"]:
        vms = vms.filter(last_backup_status=f["last_backup"])
    if f["rpo"] in rpo.STATUSES:  # the dashboard's protection answer (policies.rpo)
        vms = vms.filter(pk__in=rpo.rpo_status_of_vms(VM.objects.all()).filter(rpo_status=f["rpo"]).values("pk"))
    if f["missing"] != "yes":
        vms = vms.filter(missing_since=None)
    vms = vms.order_by("name")
    page, query = paginate(request, vms)
    rows = list(page.object_list)
    names = dict(Policy.objects.values_list("pk", "name"))
    for vm in rows:
        vm.covering_policy_name = names.get(vm.covering_policy_id, "")
    context = {"vms": rows, "page": page, "query": query, "f": f, "statuses": BackupPoint.Status.choices}
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/vm_rows.html", context)
    tree = (
        DataCenter.objects.filter(missing_since=None)
        .select_related("manager")
        .prefetch_related(
            Prefetch(
                "cluster_set",
                queryset=Cluster.objects.filter(missing_since=None)
                .annotate(vm_count=Count("vm", filter=Q(vm__missing_since=None)))
                .order_by("name"),
            )
        )
        .order_by("name")
    )
    context |= {
        "tree": tree,
        "tags": Tag.objects.filter(missing_since=None).values_list("name", flat=True).distinct().order_by("name"),
    }
    return render(request, "dashboard/vm_list.html", context)


@roles.role_required(roles.VIEW)
def vm_detail(request, pk):
    vm = get_object_or_404(VM.objects.select_related("cluster", "host", "manager"), pk=pk)
    disks = list(vm.disks.select_related("storage_domain", "manager").order_by("-bootable", "name"))
    rows = [(d, d.incremental_blocker()) for d in disks]
    points = vm.backup_points.order_by("-started")[:50]
    instants = with_actions(list(vm.instant_restores.select_related("vm", "point")[:INSTANTS_SHOWN]))
    return render(
        request,
        "dashboard/vm_detail.html",
        {
            "vm": vm,
            "disks": rows,
            "points": points,
            "instants": instants,
            "proof": last_proof(vm),
            "proving": proof_running(vm),
            "strategies": strategy_options(vm, disks),
            "tags": vm.tags.values_list("name", flat=True),
            "coverage": coverage_of(vm),
        },
    )
