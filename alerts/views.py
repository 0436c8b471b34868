from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from alerts.delivery import send_test
from alerts.forms import AlertRuleForm
from alerts.models import AlertDelivery, AlertEvent, AlertRule, webhook_shown
from core import roles
from core.audit import record_request
from core.pages import paginate
from policies.models import Policy

RECENT_DELIVERIES = 50


@roles.role_required(roles.VIEW)
def alert_list(request):
    """The alerts raised, newest first, with what each is about and how telling people went. Viewers
    see them as they see the jobs and backups they are about."""
    kind = request.GET.get("kind", "")
    unknown = bool(kind) and kind not in AlertEvent.Kind.values  # said on the page, never ignored
    events = AlertEvent.objects.for_list().order_by("-time", "-pk")
    if kind:
        events = events.none() if unknown else events.filter(kind=kind)
    page, query = paginate(request, events)
    context = {"page": page, "query": query, "kind": kind, "kinds": AlertEvent.Kind, "unknown_kind": unknown}
    return render(request, "alerts/event_list.html", context, status=400 if unknown else 200)


@roles.role_required(roles.VIEW)
def alert_channels(request):
    """Each policy's alert settings with a test button per channel, and the latest deliveries."""
    may_edit = roles.can(request.user, roles.OPERATE)
    rules = {r.policy_id: r for r in AlertRule.objects.all()}
    for rule in rules.values():
        rule.webhook_text = webhook_shown(rule.webhook_url, may_edit=may_edit)
    deliveries = list(AlertDelivery.objects.select_related("rule__policy").order_by("-time", "-pk")[:RECENT_DELIVERIES])
    for d in deliveries:
        d.target_text = webhook_shown(d.target, may_edit=may_edit) if d.channel == d.Channel.WEBHOOK else d.target
    rows = [(p, rules.get(p.pk)) for p in Policy.objects.order_by("priority", "name")]
    return render(request, "alerts/alert_list.html", {"rows": rows, "deliveries": deliveries})


@require_POST
@roles.role_required(roles.ADMINISTER)
def alert_test(request, pk, channel):
    """Send a test message through one channel of a policy's alerts and say how it went."""
    if channel not in AlertDelivery.Channel.values:
        raise Http404("No such alert channel.")
    policy = get_object_or_404(Policy, pk=pk)
    rule = AlertRule.objects.filter(policy=policy).first()
    if rule is None:
        messages.error(request, f"Policy {policy.name} has no alerts set up: nothing to test.")
        return redirect("alert-channels")
    try:
        delivery = send_test(rule=rule, channel=channel, who=request.user.get_username())
    except ValueError as e:
        messages.error(request, str(e))
        return redirect("alert-channels")
    record_request(request, action="alert_test_sent", target=rule, channel=channel, status=delivery.status)
    what = f"Test {delivery.get_channel_display().lower()} to {delivery.target}"
    if delivery.status == AlertDelivery.Status.SENT:
        messages.success(request, f"{what} sent.")
    else:
        messages.error(request, f"{what} failed: {delivery.error}")
    return redirect("alert-channels")


@roles.role_required(roles.OPERATE)
def alert_edit(request, pk):
    policy = get_object_or_404(Policy, pk=pk)
    rule = AlertRule.objects.filter(policy=policy).first()
    form = AlertRuleForm(request.POST or None, instance=rule or AlertRule(policy=policy))
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        record_request(request, action="alert_rule_changed" if rule else "alert_rule_created", target=saved)
        messages.success(request, f"Alerts of policy {policy.name} saved.")
        return redirect("alert-channels")
    return render(request, "alerts/alert_form.html", {"form": form, "policy": policy})
