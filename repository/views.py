from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.formats import label
from core.pages import paginate
from inventory.models import StagingShare, StorageDomain
from jobs.models import Job
from repository.forms import BackupDestinationForm, PointFilterForm
from repository.models import BackupDestination, BackupPoint
from repository.places import read_usage
from repository.retention import Dependants, delete_backup, dependants
from repository.storage import DestinationRefused
from repository.verify import request_verify


@roles.role_required(roles.VIEW)
def destination_list(request):
    return render(
        request,
        "repository/destination_list.html",
        {"destinations": BackupDestination.objects.with_usage().order_by("name"), "staging": export_domain_staging()},
    )


def export_domain_staging() -> list[dict]:
    """Each data center with an export domain or a staging share: the export storage domain strategy's
    way out, as the destinations page shows it (data center -> export domain -> the node's share)."""
    rows: dict[int, dict] = {}
    domains = StorageDomain.objects.filter(
        type=StorageDomain.Type.EXPORT, missing_since=None, data_center__isnull=False
    )
    for sd in domains.select_related("data_center").order_by("name"):
        rows.setdefault(sd.data_center_id, {"data_center": sd.data_center, "domains": [], "share": None})
        rows[sd.data_center_id]["domains"].append(sd.name)
    for share in StagingShare.objects.select_related("data_center"):
        rows.setdefault(share.data_center_id, {"data_center": share.data_center, "domains": [], "share": None})
        rows[share.data_center_id]["share"] = share
    return sorted(rows.values(), key=lambda row: row["data_center"].name)


@roles.role_required(roles.ADMINISTER)
def destination_edit(request, pk=None):
    destination = get_object_or_404(BackupDestination, pk=pk) if pk else None
    form = BackupDestinationForm(request.POST or None, instance=destination)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        record_request(request, action="destination_changed" if destination else "destination_created", target=saved)
        check = read_usage(saved, origin=Job.Origin.PAGE, owner=request.user)
        if check is None:
            messages.success(request, f"Destination {saved.name} saved.")
        else:
            messages.success(
                request, f"Destination {saved.name} saved; node {saved.node_id} checks its directory (job {check.pk})."
            )
        return redirect("destination-list")
    return render(request, "repository/destination_form.html", {"form": form, "edited": destination})


@roles.role_required(roles.VIEW)
def point_list(request):
    """Backups (complete, damaged, being written) with their filters; failed attempts are jobs."""
    strategies = BackupPoint.objects.order_by("strategy").values_list("strategy", flat=True).distinct()
    filters = PointFilterForm(request.GET, strategies=[(s, label(s, "strategy")) for s in strategies])
    points = BackupPoint.objects.select_related("vm", "destination", "policy").order_by("-started")
    valid = filters.is_valid()
    points = filters.filter(points) if valid else points.none()
    page, query = paginate(request, points)
    context = {"points": page.object_list, "page": page, "query": query, "filters": filters}
    # A filter that cannot be read is said, never ignored: the page shows why, and no rows.
    return render(request, "repository/point_list.html", context, status=200 if valid else 400)


@roles.role_required(roles.VIEW)
def point_detail(request, pk):
    point = get_object_or_404(BackupPoint.objects.select_related("vm", "destination", "policy", "job"), pk=pk)
    context = {
        "point": point,
        "chain": point.chain(),
        "disks": point.disks.select_related("disk").order_by("disk__name"),
        "history": point.history(),
    }
    return render(request, "repository/point_detail.html", context)


@require_POST
@roles.role_required(roles.OPERATE)
def point_verify(request, pk=None):
    """Verify one point, or every point (no pk)."""
    points = [get_object_or_404(BackupPoint, pk=pk)] if pk else None
    job = request_verify(origin=Job.Origin.PAGE, points=points, owner=request.user)
    record_request(request, action="verify_requested", target=points[0] if points else None, job=job.pk)
    return redirect("job-detail", job.pk)


@roles.role_required(roles.OPERATE)
def point_delete(request, pk):
    """Confirm, then delete a point and (listed on the page) the points built on it."""
    point = get_object_or_404(BackupPoint.objects.select_related("vm", "destination"), pk=pk)
    others = dependants(point)
    if request.method == "POST":
        try:
            deleted = delete_backup(point=point, with_dependants=bool(request.POST.get("with_dependants")))
        except Dependants as e:
            messages.error(request, str(e))
        except (ValueError, DestinationRefused) as e:
            messages.error(request, str(e))
            return redirect("point-list")
        else:
            record_request(request, action="point_deleted", target=point, deleted=deleted)
            messages.success(request, f"Backup {', '.join(map(str, deleted))} deleted.")
            return redirect("point-list")
    return render(request, "repository/point_delete.html", {"point": point, "dependants": others})
