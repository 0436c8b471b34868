"""Restore proofs by policy (issue 24): at a policy's proof schedule, the newest complete backup of
each VM it covers is booted by instant restore without network, waited for and discarded
(recovery.instant.workflow, purpose proof); what it answered is recorded on the InstantRestore.

A round is started at each time of the proof schedule: the VMs the policy covers that have a
complete backup, in name order, kept on the policy (proofs_pending). One proof of a policy runs at
a time: every tick, a policy with VMs pending and no active proof job queues the next one. The time
to boot is counted from the request (InstantRestore.seconds_to_up), so a proof is requested only
when it may start: queueing them all at once would count the wait for the one before as boot time.
Whatever is not proved (no backup, a proof already active, a cluster the VM's engine lacks) is said
in the audit log, as the ticker says of the runs it does not start."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils import timezone

from core.audit import record
from core.models import AuditEvent
from inventory.models import VM, Cluster
from jobs.models import Job
from policies.coverage import covered_vms
from policies.models import Policy
from recovery.instant.errors import InstantError
from recovery.instant.workflow import PROVE, proof_name, request_instant_restore
from recovery.models import InstantRestore
from repository.models import BackupPoint

# As for backup runs (schedule.CATCH_UP): a proof time found later than this is missed, not run late.
CATCH_UP = timedelta(hours=1)


@dataclass
class ProofReport:
    rounds: list[Policy] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def prove_newest(*, now: datetime) -> ProofReport:
    """What the ticker does for restore proofs every minute: start the rounds that are due, then queue
    the next proof of each policy whose previous one ended."""
    report = ProofReport()
    report.rounds = start_rounds(now=now)
    queue_next(report=report)
    return report


def newest_points(policy: Policy, vm_ids: list[int] | None = None) -> dict[int, int]:
    """The newest complete backup of each VM the policy covers (or of `vm_ids`), by VM id: of those
    the policy made or that are on its destination (one query)."""
    mine = models.Q(policy=policy) | models.Q(destination=policy.destination_id)
    newest = (
        BackupPoint.objects.filter(mine, vm=models.OuterRef("pk"), status=BackupPoint.Status.COMPLETE)
        .order_by("-started", "-pk")
        .values("pk")[:1]
    )
    vms = covered_vms(policy) if vm_ids is None else VM.objects.filter(pk__in=vm_ids)
    rows = vms.annotate(newest=models.Subquery(newest)).values_list("pk", "newest")
    return {pk: point for pk, point in rows}


def start_rounds(*, now: datetime) -> list[Policy]:
    """A round for each policy whose proof time came since its last round (or its creation)."""
    started = []
    for policy in Policy.objects.filter(enabled=True, prove_restores=True).order_by("priority", "name"):
        at = policy.last_proof_due(now)
        if at <= (policy.proofs_due or policy.created):
            continue
        late = now - at > CATCH_UP
        if late:
            pending, without = [], []
        else:
            vms = covered_vms(policy).order_by("name", "pk")
            points = newest_points(policy)
            ordered = list(vms.values_list("pk", "name"))
            pending = [pk for pk, _ in ordered if points.get(pk)]
            without = [name for pk, name in ordered if not points.get(pk)]
        left = len(policy.proofs_pending)
        with transaction.atomic():
            # Conditional: two tickers (or a tick delivered twice) start a round once.
            if not Policy.objects.filter(pk=policy.pk, proofs_due=policy.proofs_due).update(
                proofs_due=at, proofs_pending=pending
            ):
                continue
            note = []
            if late:
                note.append(
                    f"Missed: due at {timezone.localtime(at):%Y-%m-%d %H:%M}, but the scheduler only found it at "
                    f"{timezone.localtime(now):%Y-%m-%d %H:%M}; proofs more than {CATCH_UP.seconds // 60} minutes "
                    "late are not started."
                )
            if without:
                note.append(f"{len(without)} VM(s) have no complete backup to prove: {', '.join(without[:10])}.")
            if left:
                note.append(f"{left} VM(s) of the previous round were not proved before this one.")
            record(
                actor=None,
                source=AuditEvent.Source.SCHEDULE,
                action="restore_proofs_missed" if late else "restore_proofs_started",
                target=policy,
                due=at.isoformat(),
                vms=len(pending),
                note=" ".join(note),
            )
        policy.proofs_due, policy.proofs_pending = at, pending
        started.append(policy)
    return started


def queue_next(*, report: ProofReport) -> None:
    """Queue the next proof of each policy with VMs pending and no proof of its own active."""
    policy_type = ContentType.objects.get_for_model(Policy)
    busy = set(
        Job.objects.active().filter(kind=PROVE, started_by_type=policy_type).values_list("started_by_id", flat=True)
    )
    candidates = Policy.objects.filter(enabled=True, prove_restores=True).exclude(pk__in=busy)
    for policy in candidates.order_by("priority", "name"):
        if policy.proofs_pending:
            _queue_one(policy, report=report)


def _queue_one(policy: Policy, *, report: ProofReport) -> None:
    """Take the policy's pending VMs in order until one proof is queued; say why of each skipped."""
    with transaction.atomic():
        # Locked: two tickers take a VM once (SQLite, which has no row locks, has one writer anyway).
        policy = Policy.objects.select_for_update().select_related("destination").get(pk=policy.pk)
        pending = list(policy.proofs_pending)
        while pending:
            vm_id = pending.pop(0)
            vm = VM.objects.select_related("manager").filter(pk=vm_id).first()
            if vm is None:
                continue  # removed from the inventory since the round started: nothing to say it of
            why_not, job = _prove(policy, vm)
            if job is not None:
                report.jobs.append(job)
                break
            report.skipped.append(f"{vm.name}: {why_not}")
            record(
                actor=None,
                source=AuditEvent.Source.SCHEDULE,
                action="restore_proof_skipped",
                target=policy,
                vm=vm.name,
                reason=why_not,
            )
        Policy.objects.filter(pk=policy.pk).update(proofs_pending=pending)


def _prove(policy: Policy, vm: VM) -> tuple[str, Job | None]:
    """Queue the proof of the VM's newest complete backup: ("", job), or (why not, None)."""
    active = InstantRestore.objects.active().filter(vm=vm, purpose=InstantRestore.Purpose.PROOF).first()
    if active is not None:
        return f"{active} is still at work on it.", None
    point_id = newest_points(policy, [vm.pk]).get(vm.pk)
    if point_id is None:
        return "it has no complete backup any more.", None
    cluster = policy.proof_cluster.strip()
    if cluster and not Cluster.objects.filter(manager=vm.manager_id, name=cluster, missing_since=None).exists():
        return f"its engine ({vm.manager.name}) has no cluster named {cluster}.", None
    point = BackupPoint.objects.select_related("vm__cluster", "vm__manager", "destination").get(pk=point_id)
    try:
        with transaction.atomic():
            _, job = request_instant_restore(
                point=point,
                name=proof_name(point),
                cluster=cluster,
                origin=Job.Origin.SCHEDULE,
                who=f"policy {policy.name}",
                purpose=InstantRestore.Purpose.PROOF,
                # What started it: the alerts of the policy, and this module's one-at-a-time, find it by this.
                started_by=policy,
            )
    except InstantError as e:
        return str(e), None
    return "", job
