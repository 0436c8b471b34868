from django.shortcuts import get_object_or_404, redirect, render

from core import roles
from core.audit import record_request
from jobs.models import Job
from recovery.forms import RestoreForm
from recovery.restore import request_restore
from repository.models import BackupPoint


@roles.role_required(roles.OPERATE)
def point_restore(request, pk):
    """The restore wizard: the form, then what will happen (checked against the engine) to confirm,
    then the job."""
    point = get_object_or_404(BackupPoint.objects.select_related("vm__manager", "vm__cluster", "destination"), pk=pk)
    context = {"point": point, "lineage": point.lineage(), "confirming": False}
    if point.status != BackupPoint.Status.COMPLETE:
        return render(request, "recovery/restore_form.html", {**context, "form": None})
    initial = {
        "name": f"{point.vm.name}-restored",
        "what": "disks" if request.GET.get("what") == "disks" else "vm",
        "disks": request.GET.getlist("disks"),
    }
    if request.method == "POST" and request.POST.get("change"):
        # Back from the confirmation to the form, as it was filled in.
        form = RestoreForm(point=point, initial=RestoreForm.initial_from(request.POST))
        return render(request, "recovery/restore_form.html", {**context, "form": form})
    form = RestoreForm(request.POST or None, point=point, initial=initial)
    if request.method == "POST" and form.is_valid():
        if not form.cleaned_data["confirm"]:
            # Second step of the wizard: what will happen, to confirm (the name is checked again then).
            return render(request, "recovery/restore_form.html", {**context, "form": form, "confirming": True})
        try:
            job = request_restore(point=point, origin=Job.Origin.PAGE, owner=request.user, **form.restore_arguments())
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            record_request(request, action="restore_requested", target=point, job=job.pk)
            return redirect("job-detail", job.pk)
    return render(request, "recovery/restore_form.html", {**context, "form": form})
