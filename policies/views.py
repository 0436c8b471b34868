from datetime import time

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from core.formats import label
from jobs.models import Job
from policies.coverage import covered_by
from policies.explain import preview_schedule, summarize_retention
from policies.forms import PREVIEWED, PolicyForm
from policies.models import Policy
from policies.schedule import run_policy_now
from repository.models import BackupPoint
from repository.retention import plan_policy, request_prune
from strategies.backup import BACKUP
from strategies.registry import get_strategy


@roles.role_required(roles.VIEW)
def policy_list(request):
    policies = list(Policy.objects.select_related("destination").order_by("priority", "name"))
    for policy in policies:
        policy.schedule_words = preview_schedule(policy.schedule, count=0)
    return render(request, "policies/policy_list.html", {"policies": policies})


@roles.role_required(roles.VIEW)
def policy_detail(request, pk):
    policy = get_object_or_404(Policy.objects.select_related("destination", "match_cluster"), pk=pk)
    covered = list(covered_by(policy).select_related("cluster").order_by("name"))
    winners = dict(Policy.objects.filter(pk__in={vm.covering_policy_id for vm in covered}).values_list("pk", "name"))
    for vm in covered:
        vm.covering_policy_name = winners.get(vm.covering_policy_id, "")
    runs = list(policy.runs.select_related("owner", "verify_job")[:10])
    last_jobs = list(runs[0].jobs.filter(kind=BACKUP).select_related("vm").order_by("created", "pk")) if runs else []
    context = {
        "policy": policy,
        "next_run": timezone.localtime(policy.next_run()) if policy.enabled else None,
        "next_proofs": timezone.localtime(policy.next_proofs()) if policy.enabled and policy.prove_restores else None,
        "schedule": preview_schedule(policy.schedule, window_start=policy.window_start, window_end=policy.window_end),
        "proof_schedule": preview_schedule(policy.proof_schedule) if policy.prove_restores else None,
        "options": strategy_option_words(policy),
        "retention": summarize_retention(policy),
        "covered": covered,
        "runs": runs,
        "last_jobs": last_jobs,
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "policies/policy_detail.html", context)


def strategy_option_words(policy: Policy) -> list[tuple[str, str]]:
    """The policy's strategy options as (label, value) for people: "SSH transfer through netcat", "on"."""
    try:
        declared = {option.name: option.label for option in get_strategy(policy.strategy).options}
    except LookupError:  # a strategy this version no longer implements: its keys as they are
        declared = {}
    words = {True: "on", False: "off"}
    return [
        (declared.get(name, label(name)), words.get(value, str(value)) if isinstance(value, bool) else str(value))
        for name, value in policy.strategy_options.items()
    ]


@require_POST
@roles.role_required(roles.OPERATE)
def policy_run(request, pk):
    policy = get_object_or_404(Policy, pk=pk)
    try:
        run = run_policy_now(policy=policy, origin=Job.Origin.PAGE, owner=request.user)
    except ValueError as e:
        messages.error(request, str(e))
    else:
        record_request(request, action="policy_run_requested", target=policy, run=run.number)
        messages.success(
            request, f"Run {run.number} of policy {policy.name} started: {run.jobs.count()} backup job(s)."
        )
    return redirect("policy-detail", policy.pk)


@roles.role_required(roles.OPERATE)
def policy_edit(request, pk=None):
    policy = get_object_or_404(Policy, pk=pk) if pk else None
    form = PolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        record_request(request, action="policy_changed" if policy else "policy_created", target=saved)
        messages.success(request, f"Policy {saved.name} saved.")
        return redirect("policy-detail", saved.pk)
    # The policy's schedule is previewed against the window typed beside it, as the preview asks.
    window = {name: window_time(form[name].value()) for name in ("window_start", "window_end")}
    previews = {
        name: preview_schedule(form[name].value() or "", **(window if name == "schedule" else {})) for name in PREVIEWED
    }
    context = {"form": form, "edited": policy, "previews": previews, "time_zone": timezone.get_current_timezone_name()}
    return render(request, "policies/policy_form.html", context)


@roles.role_required(roles.VIEW)
def schedule_preview(request):
    """The schedule being typed in words, with its next five runs (the form's fields ask here as they
    change: ?schedule=... or ?proof_schedule=...); the policy's schedule with the backup window typed
    beside it (&window_start=22:00&window_end=06:00) marks the runs outside it."""
    text = next((request.GET[name] for name in PREVIEWED if name in request.GET), "")
    window = {}
    if "schedule" in request.GET:
        window = {name: window_time(request.GET.get(name)) for name in ("window_start", "window_end")}
    context = {"preview": preview_schedule(text, **window), "time_zone": timezone.get_current_timezone_name()}
    return render(request, "policies/schedule_preview.html", context)


def window_time(value: object) -> time | None:
    """An end of the backup window as typed or saved; None when empty or not a time (its field says why)."""
    try:
        return forms.TimeField(required=False).clean(value)
    except ValidationError:
        return None


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
        job = request_prune(policy=policy, origin=Job.Origin.PAGE, owner=request.user)
    except ValueError as e:
        messages.error(request, str(e))
        return redirect("policy-prune-preview", policy.pk)
    record_request(request, action="prune_requested", target=policy, job=job.pk)
    return redirect("job-detail", job.pk)
