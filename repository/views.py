from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from backupsite import roles
from repository.forms import BackupDestinationForm, RestoreForm
from repository.models import BackupDestination, BackupPoint
from repository.restore import request_restore


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


@roles.role_required(roles.OPERATE)
def point_restore(request, pk):
    point = get_object_or_404(BackupPoint.objects.select_related("vm__manager", "destination"), pk=pk)
    form = RestoreForm(request.POST or None, point=point, initial={"name": f"{point.vm.name}-restored"})
    if request.method == "POST" and form.is_valid():
        if not form.cleaned_data["confirm"]:
            # Second step of the wizard: show what will happen and ask to confirm.
            data = request.POST.copy()
            data["confirm"] = "True"
            form = RestoreForm(data, point=point)
            form.is_valid()
            return render(request, "repository/restore_form.html", {"form": form, "point": point, "confirming": True})
        try:
            job = request_restore(
                point=point,
                owner=request.user,
                name=form.cleaned_data["name"],
                cluster=form.cleaned_data["cluster"],
                storage_domain=form.cleaned_data["storage_domain"],
                power_on=form.cleaned_data["power_on"],
                allocation=form.cleaned_data["allocation"],
                replace=form.cleaned_data["replace"],
            )
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            return redirect("job-detail", job.pk)
    return render(request, "repository/restore_form.html", {"form": form, "point": point, "confirming": False})
