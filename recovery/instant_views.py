"""The pages of instant restore: the list of booted points, one's page (its disks and the jobs of
its steps), the form that boots a point, and the actions each state allows (migrate, discard).
Everything here is presentation over recovery.instant.workflow; the engine work is in its jobs."""

from collections import defaultdict

from django.conf import settings
from django.contrib import messages
from django.db.models import Case, IntegerField, Value, When
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.pages import paginate
from inventory.models import Cluster, StorageDomain
from jobs.models import Job
from recovery.forms import InstantRestoreForm, domain_label, is_instant_domain
from recovery.instant.errors import InstantError
from recovery.instant.workflow import proof_name, request_discard, request_instant_restore, request_migrate
from recovery.models import InstantRestore
from repository.models import BackupPoint

Status = InstantRestore.Status


# ----- what each state allows (as recovery.instant.workflow checks it) ---------------------------------


def may_migrate(instant: InstantRestore) -> bool:
    return instant.status == Status.RUNNING and instant.purpose != InstantRestore.Purpose.PROOF


def may_discard(instant: InstantRestore) -> bool:
    if instant.status == Status.FAILED:
        return not instant.tidied  # a failed boot that left something on the engine or the node
    return instant.status in (Status.RUNNING, Status.DISCARDING)


def with_actions(rows: list[InstantRestore]) -> list[InstantRestore]:
    """Each row told what it allows, and for those that may migrate, the data domains of their data
    center to choose from: two queries for any number of rows."""
    for row in rows:
        row.may_migrate, row.may_discard, row.domains = may_migrate(row), may_discard(row), []
    running = [r for r in rows if r.may_migrate and r.vm_id is not None]
    if not running:
        return rows
    managers = {r.vm.manager_id for r in running}
    in_cluster = {
        (c.manager_id, c.name): c.data_center_id
        for c in Cluster.objects.filter(manager__in=managers, name__in={r.cluster for r in running})
    }
    domains = (
        StorageDomain.objects.filter(manager__in=managers, missing_since=None, type=StorageDomain.Type.DATA)
        .select_related("data_center")
        .order_by("name")
    )
    by_center, of_manager, center_pk = defaultdict(list), defaultdict(list), {}
    for domain in domains:
        if is_instant_domain(domain.name):
            continue  # an instant restore's own temporary domain is no place to move to
        choice = (domain.name, domain_label(domain))
        of_manager[domain.manager_id].append(choice)
        if domain.data_center is not None:
            by_center[domain.data_center_id].append(choice)
            center_pk[(domain.manager_id, str(domain.data_center.engine_id))] = domain.data_center_id
    for row in running:
        manager = row.vm.manager_id
        center = center_pk.get((manager, row.data_center_id)) or in_cluster.get((manager, row.cluster))
        row.domains = by_center[center] if center is not None else of_manager[manager]
    return rows


def jobs_of(instant: InstantRestore):
    """The jobs of its steps (boot, migrate, discard, proof), newest first: each logs its steps."""
    return Job.objects.filter(params__instant=instant.pk).select_related("owner").order_by("-created")


def last_proof(vm) -> InstantRestore | None:
    """The VM's newest restore proof that came to an end (booted or not)."""
    proofs = vm.instant_restores.filter(purpose=InstantRestore.Purpose.PROOF)
    return proofs.exclude(proof_ok=None, status__in=InstantRestore.ACTIVE).first()


def proof_running(vm) -> InstantRestore | None:
    return vm.instant_restores.filter(purpose=InstantRestore.Purpose.PROOF, proof_ok=None).active().first()


# ----- pages ------------------------------------------------------------------------------------------


def _back(request, default: str) -> str:
    """Where a form came from (its `next`), if it is this site's; else `default`."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return default


@roles.role_required(roles.VIEW)
def instant_list(request):
    """Those that may still run from their backup first (newest first), then the ended ones."""
    rows = InstantRestore.objects.select_related("vm", "point").annotate(
        ended_rank=Case(
            When(status__in=InstantRestore.ACTIVE, then=Value(0)), default=Value(1), output_field=IntegerField()
        )
    )
    purpose = request.GET.get("purpose", "")
    if purpose in InstantRestore.Purpose.values:
        rows = rows.filter(purpose=purpose)
    page, query = paginate(request, rows.order_by("ended_rank", "-created"))
    return render(
        request,
        "recovery/instant_list.html",
        {
            "instants": with_actions(list(page.object_list)),
            "page": page,
            "query": query,
            "purpose": purpose,
            "purposes": InstantRestore.Purpose.choices,
        },
    )


@roles.role_required(roles.VIEW)
def instant_detail(request, pk):
    instant = get_object_or_404(InstantRestore.objects.select_related("vm", "point", "owner"), pk=pk)
    with_actions([instant])
    return render(request, "recovery/instant_detail.html", {"instant": instant, "jobs": jobs_of(instant)})


@roles.role_required(roles.OPERATE)
def point_instant(request, pk):
    """The "Instant restore" form of a backup point: boot it as a VM from the backup itself."""
    point = get_object_or_404(BackupPoint.objects.select_related("vm__cluster", "vm__manager", "destination"), pk=pk)
    form = InstantRestoreForm(request.POST or None, point=point, initial={"name": f"{point.vm.name}-instant"})
    if request.method == "POST" and form.is_valid():
        try:
            instant, job = request_instant_restore(
                point=point,
                name=form.cleaned_data["name"],
                cluster=form.cleaned_data["cluster"],
                migrate_to=form.cleaned_data["migrate_to"],
                origin=Job.Origin.PAGE,
                owner=request.user,
                who=request.user.get_username(),
            )
        except InstantError as e:
            form.add_error(None, str(e))
        else:
            record_request(request, action="instant_restore_requested", target=point, job=job.pk, instant=instant.pk)
            messages.success(request, f"VM {instant.name} is booting from backup {point.pk} (job {job.pk}).")
            return redirect("instant-detail", instant.pk)
    node = point.destination.node_id or settings.NODE_NAME  # the node that will serve it (as the workflow picks)
    return render(request, "recovery/instant_form.html", {"form": form, "point": point, "node": node})


@require_POST
@roles.role_required(roles.OPERATE)
def point_prove(request, pk):
    """Prove the point boots: booted without network, waited for, discarded (a restore proof)."""
    point = get_object_or_404(BackupPoint.objects.select_related("vm__cluster", "destination"), pk=pk)
    try:
        instant, job = request_instant_restore(
            point=point,
            name=proof_name(point),
            cluster=request.POST.get("cluster", ""),
            origin=Job.Origin.PAGE,
            owner=request.user,
            who=request.user.get_username(),
            purpose=InstantRestore.Purpose.PROOF,
        )
    except InstantError as e:
        messages.error(request, str(e))
        return redirect(_back(request, reverse("point-instant", args=[point.pk])))
    record_request(request, action="restore_proof_requested", target=point, job=job.pk, instant=instant.pk)
    messages.success(request, f"Proving backup {point.pk} boots (job {job.pk}).")
    return redirect("instant-detail", instant.pk)


@require_POST
@roles.role_required(roles.OPERATE)
def instant_migrate(request, pk):
    instant = get_object_or_404(InstantRestore.objects.select_related("vm", "point"), pk=pk)
    back = _back(request, reverse("instant-detail", args=[instant.pk]))
    to = request.POST.get("storage_domain", "").strip()
    try:
        job = request_migrate(instant=instant, to=to, origin=Job.Origin.PAGE, owner=request.user)
    except InstantError as e:
        messages.error(request, str(e))
        return redirect(back)
    record_request(
        request,
        action="instant_migrate_requested",
        target=instant.point or instant,
        job=job.pk,
        instant=instant.pk,
        to=to,
    )
    messages.success(request, f"VM {instant.name}'s disks are moving to {to} (job {job.pk}).")
    return redirect(back)


@require_POST
@roles.role_required(roles.OPERATE)
def instant_discard(request, pk):
    instant = get_object_or_404(InstantRestore.objects.select_related("vm", "point"), pk=pk)
    back = _back(request, reverse("instant-detail", args=[instant.pk]))
    try:
        job = request_discard(instant=instant, origin=Job.Origin.PAGE, owner=request.user)
    except InstantError as e:
        messages.error(request, str(e))
        return redirect(back)
    record_request(
        request, action="instant_discard_requested", target=instant.point or instant, job=job.pk, instant=instant.pk
    )
    messages.success(request, f"VM {instant.name} is being stopped and removed (job {job.pk}).")
    return redirect(back)
