"""When alerts are raised: jobs that end failed or skipped, damaged points, VMs past their RPO;
and when they go out: at once, or in the daily digest."""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from alerts.change_rate import judge_point
from alerts.delivery import send_alert
from alerts.models import AlertEvent, AlertRule
from jobs.models import Job
from policies.coverage import covered_vms
from policies.models import policy_of
from recovery.instant.workflow import PROVE
from recovery.models import InstantRestore
from recovery.restore import RESTORE
from repository.models import BackupPoint
from repository.retention import RETENTION
from repository.verify import VERIFY
from strategies.backup import BACKUP

log = logging.getLogger("alerts")

# A failed restore proof is a failed job like a failed backup: the backup may not boot.
ALERTED_KINDS = {BACKUP, RESTORE, VERIFY, RETENTION, PROVE}


def raise_alert(
    *, rule: AlertRule, kind: str, subject: str, vm=None, now: datetime | None = None, **details
) -> AlertEvent:
    """Record an alert; one for immediate delivery goes out once this transaction commits."""
    event = AlertEvent.objects.create(
        rule=rule,
        kind=kind,
        subject=subject[:300],
        vm=vm,
        job_id=details.get("job"),
        point_id=details.get("point"),
        details=details,
        time=now or timezone.now(),
    )
    if rule.digest == AlertRule.Digest.IMMEDIATE:
        transaction.on_commit(lambda: dispatch_alert(event.pk))
    return event


def dispatch_alert(event_id: int) -> None:
    """Hand the delivery to a worker: a webhook's retries must not hold up the job that raised it."""
    if settings.Q_CLUSTER.get("sync"):
        deliver_alert(event_id)
        return
    from django_q.tasks import async_task

    async_task("alerts.events.deliver_alert", event_id, task_name=f"alert-{event_id}")


def deliver_alert(event_id: int, *, sleep: Callable[[float], None] = time.sleep) -> None:
    event = AlertEvent.objects.pending().select_related("rule__policy").filter(pk=event_id).first()
    if event is not None:  # already sent (a task delivered twice) or gone with its policy
        send_alert(rule=event.rule, events=[event], sleep=sleep)


def job_finished(sender, job: Job, status: str, **kwargs) -> None:
    if job.kind not in ALERTED_KINDS:
        return
    if job.kind == BACKUP and status == Job.Status.SUCCEEDED:
        check_change_rate(job)
        return
    if status == Job.Status.FAILED:
        kind, subject = AlertEvent.Kind.FAILED, f"{job.kind_label} of {job.name} failed"
    elif status == Job.Status.SKIPPED:
        kind, subject = AlertEvent.Kind.SKIPPED, f"{job.kind_label} of {job.name} skipped"
    else:
        return
    if job.kind == PROVE:
        proof_failed(job, kind=kind)
        return
    policy = policy_of(job)
    rule = AlertRule.objects.filter(policy=policy).first() if policy is not None else None
    if rule is not None:
        raise_alert(rule=rule, kind=kind, subject=subject, vm=job.vm, job=job.pk, error=job.error)


def proof_failed(job: Job, *, kind: str) -> None:
    """A restore proof that failed, told to the policy that asked for it (a proof by hand: the policy
    that made the backup), naming the VM, the backup and the step it failed at."""
    proof = InstantRestore.objects.filter(pk=job.params.get("instant")).select_related("point__policy", "vm").first()
    policy = policy_of(job) or (proof.point.policy if proof is not None and proof.point else None)
    rule = AlertRule.objects.filter(policy=policy).first() if policy is not None else None
    if rule is None:
        return
    vm = job.vm or (proof.vm if proof is not None else None)
    name = vm.name if vm is not None else job.name
    point = proof.point_id if proof is not None else None
    step = proof.step if proof is not None else ""
    subject = f"Restore proof of {name} (backup {point}) failed" + (f" at: {step}" if step else "")
    if kind == AlertEvent.Kind.SKIPPED:
        subject = f"Restore proof of {name} (backup {point}) skipped"
    raise_alert(rule=rule, kind=kind, subject=subject, vm=vm, job=job.pk, point=point, step=step, error=job.error)


def check_change_rate(job: Job) -> AlertEvent | None:
    """After a backup: its incremental judged against the VM's usual change rate (alerts.change_rate),
    told to the policy that made it, with the figures that tripped the rule."""
    point = (
        BackupPoint.objects.complete()
        .filter(job=job, type=BackupPoint.Type.INCREMENTAL)
        .select_related("vm", "policy")
        .order_by("-started")
        .first()
    )
    unusual = judge_point(point) if point is not None else None
    if unusual is None:
        return None
    log.warning("alerts: %s", unusual.sentence)
    rule = AlertRule.objects.filter(policy_id=point.policy_id).first()
    if rule is None:
        return None  # flagged on the dashboard all the same
    return raise_alert(
        rule=rule,
        kind=AlertEvent.Kind.CHANGE_RATE,
        subject=f"Unusual change rate: {unusual.sentence}",
        vm=point.vm,
        job=job.pk,
        **unusual.figures(),
    )


def point_damaged(sender, point: BackupPoint, problems: list[str], **kwargs) -> None:
    rule = AlertRule.objects.filter(policy_id=point.policy_id).first() if point.policy_id else None
    if rule is not None:
        raise_alert(
            rule=rule,
            kind=AlertEvent.Kind.DAMAGED,
            subject=f"Backup {point.pk} of {point.vm.name} is damaged",
            vm=point.vm,
            point=point.pk,
            problems=problems,
        )


def check_rpo(*, now: datetime | None = None) -> list[AlertEvent]:
    """One alert per VM a policy covers whose newest complete backup is older than the policy's RPO
    (or that has none); once per lapse, not at every check."""
    now = now or timezone.now()
    raised = []
    rules = AlertRule.objects.filter(rpo_hours__isnull=False, policy__enabled=True).select_related("policy")
    for rule in rules:
        cutoff = now - timedelta(hours=rule.rpo_hours)
        last_alert = (
            AlertEvent.objects.filter(rule=rule, kind=AlertEvent.Kind.RPO, vm=models.OuterRef("pk"))
            .order_by("-time")
            .values("time")[:1]
        )
        last_point = (
            BackupPoint.objects.filter(vm=models.OuterRef("pk"), status=BackupPoint.Status.COMPLETE)
            .order_by("-started")
            .values("started")[:1]
        )
        late = covered_vms(rule.policy).annotate(
            last_point=models.Subquery(last_point), last_alert=models.Subquery(last_alert)
        )
        late = late.filter(models.Q(last_point=None) | models.Q(last_point__lt=cutoff))
        for vm in late.order_by("name"):
            if vm.last_alert is not None and (vm.last_point is None or vm.last_alert > vm.last_point):
                continue  # already told about this lapse
            since = f"since {timezone.localtime(vm.last_point):%Y-%m-%d %H:%M}" if vm.last_point else "ever"
            raised.append(
                raise_alert(
                    rule=rule,
                    kind=AlertEvent.Kind.RPO,
                    subject=f"{vm.name} has no backup within {rule.rpo_hours} h (none {since})",
                    vm=vm,
                    now=now,
                    last_backup=vm.last_point.isoformat() if vm.last_point else None,
                    rpo_hours=rule.rpo_hours,
                )
            )
    return raised


def send_digests(*, now: datetime | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Send each daily rule's pending alerts in one message, at most once a day; how many were sent."""
    now = now or timezone.now()
    due = AlertRule.objects.filter(digest=AlertRule.Digest.DAILY).filter(
        models.Q(last_digest=None) | models.Q(last_digest__lte=now - timedelta(days=1))
    )
    sent = 0
    for rule in due.select_related("policy"):
        events = list(rule.events.pending().order_by("time", "pk"))
        if not events:
            continue
        send_alert(rule=rule, events=events, digest=True, sleep=sleep)
        AlertRule.objects.filter(pk=rule.pk).update(last_digest=now)
        sent += 1
    return sent


def check_alerts(now: datetime | None = None) -> None:
    """The periodic task (a django-q2 schedule): RPO checks, then the digests that are due."""
    raised = check_rpo(now=now)
    digests = send_digests(now=now)
    if raised or digests:
        log.info("alerts: %d RPO alert(s) raised, %d digest(s) sent", len(raised), digests)
