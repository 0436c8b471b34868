from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from core import roles
from core.audit import record_request
from policies.forms import PolicyForm
from policies.models import Policy


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
