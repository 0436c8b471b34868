from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render

from backupsite import roles
from backupsite.forms import UserForm
from inventory.models import VM, Manager
from jobs.models import Job, Policy
from repository.models import BackupDestination, BackupPoint

User = get_user_model()


@roles.role_required(roles.VIEW)
def dashboard(request):
    present = VM.objects.filter(missing_since=None)
    # Protected as the inventory page counts it: an explicit member or matched by a policy's rules.
    vm_counts = {"total": present.count(), "protected": present.with_backup_summary().filter(protected=True).count()}
    job_counts = dict(Job.objects.values_list("status").annotate(n=Count("pk")).order_by())
    context = {
        "managers": Manager.objects.count(),
        "vms": vm_counts["total"],
        "protected_vms": vm_counts["protected"],
        "policies": Policy.objects.filter(enabled=True).count(),
        "destinations": BackupDestination.objects.filter(enabled=True).count(),
        "points": BackupPoint.objects.complete().count(),
        "jobs_running": job_counts.get(Job.Status.RUNNING, 0),
        "jobs_queued": job_counts.get(Job.Status.QUEUED, 0),
        "jobs_failed": job_counts.get(Job.Status.FAILED, 0),
        "recent_jobs": Job.objects.select_related("owner")[:10],
    }
    return render(request, "backupsite/dashboard.html", context)


@roles.role_required(roles.ADMINISTER)
def settings_page(request):
    users = User.objects.order_by("username").prefetch_related("groups")
    rows = [(u, roles.role_of(u)) for u in users]
    return render(request, "backupsite/settings.html", {"rows": rows})


@roles.role_required(roles.ADMINISTER)
def user_edit(request, pk=None):
    user = get_object_or_404(User, pk=pk) if pk else None
    form = UserForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        if user == request.user and not form.cleaned_data["is_active"]:
            form.add_error("is_active", "You cannot deactivate yourself.")
        else:
            saved = form.save()
            messages.success(request, f"User {saved.username} saved.")
            return redirect("settings")
    return render(request, "backupsite/user_form.html", {"form": form, "edited": user})
