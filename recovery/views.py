from django.shortcuts import get_object_or_404, redirect, render

from core import roles
from core.audit import record_request
from jobs.models import Job
from recovery.forms import RestoreForm
from recovery.restore import request_restore
from recovery.ssh_restore import restore_transfer
from repository.models import BackupPoint


@roles.role_required(roles.OPERATE)
def point_restore(request, pk):
    point = get_object_or_404(BackupPoint.objects.select_related("vm__manager", "destination"), pk=pk)
    form = RestoreForm(request.POST or None, point=point, initial={"name": f"{point.vm.name}-restored"})
    _, transfer = restore_transfer(point)
    if request.method == "POST" and form.is_valid():
        if not form.cleaned_data["confirm"]:
            # Second step of the wizard: show what will happen and ask to confirm.
            data = request.POST.copy()
            data["confirm"] = "True"
            form = RestoreForm(data, point=point)
            form.is_valid()
            return render(
                request,
                "recovery/restore_form.html",
                {"form": form, "point": point, "confirming": True, "transfer": transfer},
            )
        try:
            job = request_restore(
                point=point,
                origin=Job.Origin.PAGE,
                owner=request.user,
                name=form.cleaned_data["name"],
                cluster=form.cleaned_data["cluster"],
                storage_domain=form.cleaned_data["storage_domain"],
                power_on=form.cleaned_data["power_on"],
                allocation=form.cleaned_data["allocation"],
                replace=form.cleaned_data["replace"],
                transfer=form.cleaned_data["transfer"] or "auto",
            )
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            record_request(request, action="restore_requested", target=point, job=job.pk)
            return redirect("job-detail", job.pk)
    return render(
        request, "recovery/restore_form.html", {"form": form, "point": point, "confirming": False, "transfer": transfer}
    )
