from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from alerts.forms import AlertRuleForm
from alerts.models import AlertDelivery, AlertRule
from core import roles
from core.audit import record_request
from policies.models import Policy

RECENT_DELIVERIES = 50


@roles.role_required(roles.VIEW)
def alert_list(request):
    """Each policy's alert settings, and the latest deliveries with how they went."""
    rules = {r.policy_id: r for r in AlertRule.objects.all()}
    deliveries = AlertDelivery.objects.select_related("rule__policy").order_by("-time", "-pk")[:RECENT_DELIVERIES]
    rows = [(p, rules.get(p.pk)) for p in Policy.objects.order_by("priority", "name")]
    return render(request, "alerts/alert_list.html", {"rows": rows, "deliveries": deliveries})


@roles.role_required(roles.OPERATE)
def alert_edit(request, pk):
    policy = get_object_or_404(Policy, pk=pk)
    rule = AlertRule.objects.filter(policy=policy).first()
    form = AlertRuleForm(request.POST or None, instance=rule or AlertRule(policy=policy))
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        record_request(request, action="alert_rule_changed" if rule else "alert_rule_created", target=saved)
        messages.success(request, f"Alerts of policy {policy.name} saved.")
        return redirect("alert-list")
    return render(request, "alerts/alert_form.html", {"form": form, "policy": policy})
