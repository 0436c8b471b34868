"""The inventory's VM list (filters, RPO status, bulk actions) and a VM's page."""

from django.contrib import messages
from django.db.models import Count, OuterRef, Prefetch, Q, Subquery, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.formats import duration, plural
from core.pages import paginate
from dashboard.bulk import add_to_policy, back_up_vms, backup_message, refusal_message
from dashboard.inventory_forms import ASSIGN, VmBulkForm
from dashboard.vm_history import chains_of, change_chart, kept_points, storage_chart
from inventory.models import VM, Cluster, DataCenter, Disk, Tag
from inventory.validators import is_uuid
from jobs.models import Job
from policies import rpo
from policies.coverage import coverage_of
from policies.models import Policy
from policies.rpo import rpo_of, rpo_status_of_vms
from recovery.instant_views import last_proof, proof_running, with_actions
from strategies.registry import strategy_options

INSTANTS_SHOWN = 10  # on a VM's page, the newest; /instant/ lists them all
FILTERS = ("q", "cluster", "datacenter", "tag", "rpo", "missing")
# A table cell's words for each RPO status (policies.rpo's labels, longer, are their titles).
RPO_SHORT = {rpo.OK: "OK", rpo.STALE: "Stale", rpo.FAILING: "Failing", rpo.UNCOVERED: "Not covered"}


def _filtered(vms, f: dict[str, str]):
    if "\x00" in f["q"] + f["tag"]:
        return vms.none()  # no name or tag holds a NUL, and PostgreSQL refuses one in a query
    if f["q"]:
        match = Q(name__icontains=f["q"])
        if is_uuid(f["q"]):
            match |= Q(engine_id=f["q"])
        vms = vms.filter(match)
    if f["cluster"].isdecimal():  # what int() reads ("²" is a digit, not a number)
        vms = vms.filter(cluster_id=f["cluster"])
    if f["datacenter"].isdecimal():
        vms = vms.filter(cluster__data_center_id=f["datacenter"])
    if f["tag"]:
        vms = vms.filter(tags__name=f["tag"])
    if f["missing"] != "yes":
        vms = vms.filter(missing_since=None)
    if f["rpo"] in rpo.STATUSES:
        vms = vms.filter(rpo_status=f["rpo"])
    return vms


def _unreadable(f: dict[str, str]) -> str:
    """Why a filter of the address cannot be read ("" when all can): never silently ignored."""
    if f["rpo"] and f["rpo"] not in rpo.STATUSES:
        known = ", ".join(f"{key} ({text.lower()})" for key, text in RPO_SHORT.items())
        return f'There is no RPO status "{f["rpo"]}": choose one of {known}.'
    for key, what in (("cluster", "cluster"), ("datacenter", "data center")):
        if f[key] and not f[key].isdecimal():  # what int() reads ("²" is a digit, not a number)
            return f'"{f[key]}" is not a {what} of the inventory: pick one in the tree.'
    return ""


def _rpo_title(status: str, objective) -> str:
    if status == rpo.OK:
        return f"A good backup within its RPO ({duration(objective)})"
    if status == rpo.STALE:
        return f"No good backup within its RPO ({duration(objective)})"
    if status == rpo.FAILING:
        return "Its last backup attempt failed"
    return "No enabled policy covers it"


@roles.role_required(roles.VIEW)
def vm_list(request):
    f = {key: request.GET.get(key, "").strip() for key in FILTERS}
    size = (
        Disk.objects.filter(vm=OuterRef("pk"), missing_since=None)
        .values("vm")
        .annotate(total=Sum("provisioned_size"))
        .values("total")
    )
    vms = (
        rpo_status_of_vms(VM.objects.all())
        .annotate(size=Subquery(size))
        .select_related("cluster", "manager")
        .prefetch_related("tags")
    )
    error = _unreadable(f)
    vms = vms.none() if error else _filtered(vms, f).order_by("name")
    page, query = paginate(request, vms)
    rows = list(page.object_list)
    policies = list(Policy.objects.order_by("name").only("pk", "name", "enabled", "schedule"))
    names = {p.pk: p.name for p in policies}
    rpos = {p.pk: rpo_of(p) for p in policies if p.pk in {vm.covering_policy_id for vm in rows}}
    for vm in rows:
        vm.covering_policy_name = names.get(vm.covering_policy_id, "")
        vm.rpo_label = RPO_SHORT[vm.rpo_status]
        vm.rpo_title = _rpo_title(vm.rpo_status, rpos.get(vm.covering_policy_id))
    context = {"vms": rows, "page": page, "query": query, "f": f, "filter_error": error}
    # An htmx filter change swaps the rows only; a history restore asks for the whole page.
    if request.headers.get("HX-Request") and not request.headers.get("HX-History-Restore-Request"):
        response = render(request, "dashboard/vm_rows.html", context)
    else:
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
            "rpo_choices": list(RPO_SHORT.items()),
            "policies": policies,
            # "Back up selected" offers the destinations its form accepts.
            "destinations": VmBulkForm.base_fields["destination"].queryset.only("pk", "name"),
        }
        response = render(request, "dashboard/vm_list.html", context)
    patch_vary_headers(response, ["HX-Request"])
    if error:
        response.status_code = 400  # a filter that cannot be read is said, as on the jobs and backups lists
    return response


def _back_to_list(request):
    """The list as it was filtered (the page the form was sent from), else the whole list."""
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(referer)
    return redirect("vm-list")


@require_POST
# Operators: as "Back up now" and the policy form require.
@roles.role_required(roles.OPERATE)
def vm_bulk(request):
    """Back up the ticked VMs now, or list them in a policy."""
    form = VmBulkForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return _back_to_list(request)
    vms = list(form.cleaned_data["vm"])
    if form.cleaned_data["action"] == ASSIGN:
        policy = form.cleaned_data["policy"]
        added = add_to_policy(policy=policy, vms=vms)
        if added:
            record_request(request, action="policy_changed", target=policy, vms_added=[vm.name for vm in added])
        already = len(vms) - len(added)
        text = f"Added {plural(len(added), 'VM')} to {policy.name}."
        if already:
            text += f" {plural(already, 'VM was', 'VMs were')} listed in it already."
        messages.success(request, text)
        return _back_to_list(request)
    done = back_up_vms(
        vms=vms, owner=request.user, origin=Job.Origin.PAGE, destination=form.cleaned_data["destination"]
    )
    for job in done.jobs:
        record_request(request, action="backup_requested", target=job.vm, job=job.pk, type="auto")
    if done.jobs:
        messages.success(request, backup_message(done))
    if done.refused:
        messages.error(request, refusal_message(done))
    return _back_to_list(request)


@roles.role_required(roles.VIEW)
def vm_detail(request, pk):
    vm = get_object_or_404(VM.objects.select_related("cluster", "host", "manager"), pk=pk)
    disks = list(vm.disks.select_related("storage_domain", "manager").order_by("-bootable", "name"))
    rows = [(d, d.incremental_blocker()) for d in disks]
    points = vm.backup_points.select_related("vm", "destination").order_by("-started")[:50]
    instants = with_actions(list(vm.instant_restores.select_related("vm", "point")[:INSTANTS_SHOWN]))
    coverage = coverage_of(vm)
    policy = coverage[0][0] if coverage else None
    state = rpo_status_of_vms(VM.objects.filter(pk=vm.pk)).values(
        "rpo_status", "last_good_backup", "last_attempt_status", "last_attempt_time", "last_attempt_error"
    )[0]
    kept = kept_points(vm.pk)
    charts = {
        "storage": storage_chart(kept, vm_name=vm.name),
        "change": change_chart(vm.pk, vm_name=vm.name),
    }
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
            "coverage": coverage,
            "policy": policy,
            "next_run": policy.next_run() if policy else None,
            "rpo": rpo_of(policy) if policy else None,
            "state": state,
            "rpo_label": RPO_SHORT[state["rpo_status"]],
            "groups": chains_of(kept),
            "charts": charts,
            "now": timezone.now(),
        },
    )
