from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from jobs.models import Job
from repository.forms import BackupDestinationForm
from repository.models import BackupDestination, BackupPoint
from repository.verify import request_verify


@roles.role_required(roles.VIEW)
def destination_list(request):
    return render(request, "repository/destination_list.html", {"destinations": BackupDestination.objects.all()})


@roles.role_required(roles.ADMINISTER)
def destination_edit(request, pk=None):
    destination = get_object_or_404(BackupDestination, pk=pk) if pk else None
    form = BackupDestinationForm(request.POST or None, instance=destination)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        saved.refresh_usage()
        messages.success(request, f"Destination {saved.name} saved.")
        return redirect("destination-list")
    return render(request, "repository/destination_form.html", {"form": form, "edited": destination})


@roles.role_required(roles.VIEW)
def point_list(request):
    points = BackupPoint.objects.select_related("vm", "destination", "policy").order_by("-started")
    status = request.GET.get("status")
    if status:
        points = points.filter(status=status)
    return render(request, "repository/point_list.html", {"points": points[:200]})


@require_POST
@roles.role_required(roles.OPERATE)
def point_verify(request, pk=None):
    """Verify one point, or every point (no pk)."""
    points = [get_object_or_404(BackupPoint, pk=pk)] if pk else None
    job = request_verify(origin=Job.Origin.PAGE, points=points, owner=request.user)
    return redirect("job-detail", job.pk)
