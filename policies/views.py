from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from policies.forms import PolicyForm
from policies.models import Policy
from repository.models import BackupPoint
from repository.retention import plan_policy, request_prune


@roles.role_required(roles.VIEW)
def policy_list(request):
    policies = Policy.objects.select_related("destination").order_by("priority", "name")
    return render(request, "policies/policy_list.html", {"policies": policies})


@roles.role_required(roles.OPERATE)
def policy_edit(request, pk=None):
    policy = get_object_or_404(Policy, pk=pk) if pk else None
    form = PolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        record_request(request, action="policy_changed" if policy else "policy_created", target=saved)
        messages.success(request, f"Policy {saved.name} saved.")
        return redirect("policy-list")
    return render(request, "policies/policy_form.html", {"form": form, "edited": policy})


@roles.role_required(roles.VIEW)
def policy_prune_preview(request, pk):
    """What the policy's retention would do now, point by point, and a button to do it."""
    policy = get_object_or_404(Policy, pk=pk)
    decisions = [d for plan in plan_policy(policy=policy).values() for d in plan.decisions]
    points = BackupPoint.objects.select_related("vm", "destination").in_bulk([d.point.pk for d in decisions])
    rows = [(points[d.point.pk], d) for d in decisions]
    return render(request, "policies/policy_prune.html", {"policy": policy, "rows": rows})


@require_POST
@roles.role_required(roles.OPERATE)
def policy_prune(request, pk):
    policy = get_object_or_404(Policy, pk=pk)
    try:
        job = request_prune(policy=policy, owner=request.user)
    except ValueError as e:
        messages.error(request, str(e))
        return redirect("policy-prune-preview", policy.pk)
    record_request(request, action="prune_requested", target=policy, job=job.pk)
    return redirect("job-detail", job.pk)
