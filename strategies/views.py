from django.shortcuts import get_object_or_404, redirect, render

from core import roles
from core.audit import record_request
from inventory.models import VM
from jobs.models import Job
from strategies.backup import request_backup
from strategies.forms import BackupNowForm


@roles.role_required(roles.OPERATE)
def vm_backup(request, pk):
    vm = get_object_or_404(VM.objects.select_related("manager", "host"), pk=pk)
    form = BackupNowForm(request.POST or None, vm=vm)
    if request.method == "POST" and form.is_valid():
        try:
            job = request_backup(
                vm=vm,
                origin=Job.Origin.PAGE,
                owner=request.user,
                strategy=form.cleaned_data["strategy"] or None,
                type=form.cleaned_data["type"],
                destination=form.cleaned_data["destination"],
                options=form.cleaned_data["options"],
            )
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            record_request(request, action="backup_requested", target=vm, job=job.pk, type=form.cleaned_data["type"])
            return redirect("job-detail", job.pk)
    return render(request, "strategies/vm_backup.html", {"vm": vm, "form": form})
